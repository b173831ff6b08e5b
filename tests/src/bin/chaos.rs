//! The long chaos campaign: after `cargo test --no-run` (which builds this
//! binary and `switchyard` beside it), `target/debug/chaos --kills 170
//! --seeds 1,2,3 --mode both`.
//! Prints each seed's report and the totals; exits 1 when anything was
//! duplicated, lost or left behind. RELIABILITY.md keeps the last result.

use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use switchyard_testkit::chaos::{self, Campaign, Mode};

#[derive(Parser)]
#[command(
    about = "Kill switchyard at random moments under faults and churn, then check both systems"
)]
struct Args {
    /// SIGKILLs per seed.
    #[arg(long, default_value_t = 170)]
    kills: usize,
    /// Seeds, one campaign each.
    #[arg(long, value_delimiter = ',', default_value = "1,2,3")]
    seeds: Vec<u64>,
    /// How the host runs.
    #[arg(long, value_enum, default_value_t = ModeArg::Both)]
    mode: ModeArg,
    /// Employees at the start.
    #[arg(long, default_value_t = 40)]
    employees: usize,
    /// Faults per thousand requests.
    #[arg(long, default_value_t = 60)]
    faults: u32,
}

#[derive(Clone, Copy, ValueEnum)]
enum ModeArg {
    Once,
    Daemon,
    Both,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let mode = match args.mode {
        ModeArg::Once => Mode::Once,
        ModeArg::Daemon => Mode::Daemon,
        ModeArg::Both => Mode::Both,
    };
    let mut failed = false;
    let mut kills = 0;
    let mut findings = 0;
    for seed in &args.seeds {
        let campaign = Campaign {
            seed: *seed,
            kills: args.kills,
            mode,
            employees: args.employees,
            fault_per_mille: args.faults,
        };
        match chaos::run(&campaign).await {
            Ok(report) => {
                println!("## seed {seed}, {mode}\n{report}");
                kills += report.kills;
                findings += report.findings.len();
                failed |= !report.findings.is_empty();
            }
            Err(e) => {
                println!("## seed {seed}: the campaign could not run: {e:#}");
                failed = true;
            }
        }
    }
    println!(
        "total: {kills} kills over {} seed(s), {findings} finding(s)",
        args.seeds.len()
    );
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
