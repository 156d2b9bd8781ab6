mod helpers;
mod interop;
mod readme;
mod tools;
