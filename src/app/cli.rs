//! The command line: with no arguments the binary is the Lambda function
//! (what the runtime starts); `replay`, `ddl`, `redrive` and `windows` are
//! tools for a workstation.

use crate::app::{ddl, redrive, replay, windows};

#[derive(Debug, clap::Parser)]
#[command(
    name = "cdc-batcher",
    version,
    about = "AWS DMS change records from Kinesis to typed Parquet in S3",
    long_about = "AWS DMS change records from Kinesis to typed Parquet in S3. Without a \
        command it runs as the AWS Lambda function (the runtime starts it that way). \
        Configuration is read from the environment (see docs/operating.md \
        \"Configuration\").\n\n\
        Exit codes: 0 done, 1 the command failed (see its --help), 2 bad arguments or \
        configuration, 3 `ddl --check` found files to rewrite."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    Replay(replay::ReplayArgs),
    Ddl(ddl::DdlArgs),
    Redrive(redrive::RedriveArgs),
    Windows(windows::WindowsArgs),
}

/// Runs a workstation command; returns the process exit code.
pub async fn run(command: Command) -> i32 {
    match command {
        Command::Replay(args) => replay::run(args).await,
        Command::Ddl(args) => ddl::run(args).await,
        Command::Redrive(args) => redrive::run(args).await,
        Command::Windows(args) => windows::run(args).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }
}
