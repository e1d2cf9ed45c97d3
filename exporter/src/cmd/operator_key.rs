//! `astrolabe operator-key generate --out FILE`: a new operator keypair.
//! The private key goes to FILE (0600, never overwritten); the public key
//! is printed, to be listed in every agent's `--security.trusted-key`.

use std::path::PathBuf;

use clap::{Args, Subcommand};

#[derive(Debug, Args)]
pub struct OperatorKeyArgs {
    #[command(subcommand)]
    pub action: OperatorKeyAction,
}

#[derive(Debug, Subcommand)]
pub enum OperatorKeyAction {
    /// Create a keypair: the private key to --out, the public key printed.
    Generate {
        /// Where to write the private key (created readable by you only).
        #[arg(long)]
        out: PathBuf,
    },
    /// Print the public key of a private key file.
    Public {
        /// The private key file.
        #[arg(long)]
        key: PathBuf,
    },
}

pub fn run(args: OperatorKeyArgs) -> anyhow::Result<()> {
    match args.action {
        OperatorKeyAction::Generate { out } => {
            let key = crate::security::key_file::generate()?;
            crate::security::key_file::save(&key, &out)?;
            eprintln!(
                "private key written to {}; give agents the public key with --security.trusted-key:",
                out.display()
            );
            println!("{}", key.public_base64());
        }
        OperatorKeyAction::Public { key } => {
            println!("{}", crate::security::key_file::load(&key)?.public_base64());
        }
    }
    Ok(())
}
