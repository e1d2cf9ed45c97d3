//! The `astrolabe` command line: one module per subcommand.

pub mod agent;
pub mod demo;
pub mod keys;
pub mod query;
pub mod sim;
