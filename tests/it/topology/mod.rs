mod cluster;
mod failover;
mod sentinel;
mod sentinel_epochs;
mod sentinel_leaders;
mod unix_socket;
