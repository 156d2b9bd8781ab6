mod helpers;
mod interop;
mod lend;
mod readme;
mod server_checks;
mod tools;
