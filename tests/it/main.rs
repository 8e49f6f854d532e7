//! sendgate's integration tests, in one binary (one link, one shared
//! support module): each module drives the proxy over real sockets, in
//! process or as the built binary, against a fake Graph API or the sandbox
//! started on a free loopback port.

mod support;

mod admin;
mod cli;
mod cli_ops;
mod connections;
mod deploy_kit;
mod durability;
mod edges;
mod fleet;
mod fleet_limits;
mod http1_front;
mod lifecycle;
mod limits;
mod routes;
mod send_table;
mod tls_listener;
mod tls_upstream;
mod transparency;
mod trust;
mod upstream_failures;
mod webhook_relay;
