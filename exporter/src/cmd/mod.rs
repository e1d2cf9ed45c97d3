//! The `astrolabe` command line: one module per subcommand.

pub mod agent;
pub mod aggregate;
pub mod demo;
pub mod keys;
pub mod operator_key;
pub mod query;
pub mod sim;
