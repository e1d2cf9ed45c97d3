//! The `astrolabe` command line: one module per subcommand.

pub mod sim;
