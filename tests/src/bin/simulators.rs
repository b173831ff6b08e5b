//! Runs the HRIS (BambooHR-shaped) and LMS (Moodle-shaped) simulators until Ctrl-C, for
//! poking at them with curl or pointing a locally running Switchyard host at them.
//!
//! ```text
//! cargo run -p switchyard-testkit --bin simulators -- --employees 50
//! ```

use clap::Parser;
use switchyard_testkit::hris::{HrisSeed, HrisSim};
use switchyard_testkit::lms::{LmsSeed, LmsSim};

/// Start both simulators with their default seeds and print how to reach them.
#[derive(Debug, Parser)]
#[command(
    name = "simulators",
    about = "Run the BambooHR-shaped and Moodle-shaped simulators"
)]
struct Args {
    /// Number of seeded HRIS employees.
    #[arg(long, default_value_t = 50)]
    employees: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let hris = HrisSim::start(HrisSeed {
        employees: args.employees,
        ..HrisSeed::default()
    })
    .await?;
    let lms = LmsSim::start(LmsSeed::default()).await?;

    println!("HRIS (BambooHR-shaped) simulator");
    println!("  base URL: {}", hris.base_url());
    println!(
        "  API key:  {}   (HTTP Basic user name, any password)",
        hris.api_key()
    );
    println!(
        "  example:  curl -u {}:x {}/api/v1/training/type",
        hris.api_key(),
        hris.base_url()
    );
    println!(
        "  control:  curl -X POST {}/_sim/employees -d '{{\"firstName\": \"Nora\", \"lastName\": \"Quist\", \"department\": \"Warehouse\"}}'",
        hris.base_url()
    );
    println!("LMS (Moodle-shaped) simulator");
    println!("  base URL: {}", lms.base_url());
    println!("  endpoint: {}/webservice/rest/server.php", lms.base_url());
    println!("  token:    {}", lms.token());
    println!(
        "  example:  curl -d wstoken={} -d moodlewsrestformat=json -d wsfunction=core_course_get_courses_by_field {}/webservice/rest/server.php",
        lms.token(),
        lms.base_url()
    );
    println!("  control:  curl {}/_sim/state", lms.base_url());
    println!(
        "The control API (hire, change, terminate, rehire, complete, faults): docs/simulators.md"
    );
    println!(
        "{} employees, {} courses. Press Ctrl-C to stop.",
        hris.employees().len(),
        lms.courses().len()
    );

    tokio::signal::ctrl_c().await?;
    println!("stopping");
    hris.shutdown();
    lms.shutdown();
    Ok(())
}
