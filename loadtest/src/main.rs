//! `kassa-loadtest`: parses the options, runs, prints the report (and writes its JSON), and
//! exits 1 when an invariant was violated, 2 when the run itself could not be done.

use clap::Parser;
use kassa_loadtest::{Options, run};
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let opts = Options::parse();
    let json = opts.json.clone();
    let report = match run(opts).await {
        Ok(report) => report,
        Err(e) => {
            eprintln!("kassa-loadtest: {e:#}");
            return ExitCode::from(2);
        }
    };
    print!("{}", report.render());
    if let Some(path) = json {
        let written = serde_json::to_vec_pretty(&report)
            .map_err(anyhow::Error::from)
            .and_then(|bytes| Ok(std::fs::write(&path, bytes)?));
        if let Err(e) = written {
            eprintln!("kassa-loadtest: cannot write {}: {e:#}", path.display());
            return ExitCode::from(2);
        }
    }
    if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
