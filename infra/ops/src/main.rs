//! `enerflo-sync-ops`: see the README's "Operating it".

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::{Parser, Subcommand};
use enerflo_sync::classify::Stage;
use enerflo_sync::config::Config;
use enerflo_sync::reconcile::{SWEEPABLE, parse_since, parse_stages};
use enerflo_sync_ops::backfill::{Backfill, reconciler, render, run_here, run_on_runner};
use enerflo_sync_ops::{
    Backend, Filter, doctor, entity_report, event_rerun, event_show, event_summary, hubspot,
    list_dead_letters, monday, parse_time, replay, salesforce,
};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Parser)]
#[command(
    name = "enerflo-sync-ops",
    about = "Dead letters, replays, cross-references and the event log of the Enerflo <-> CRM sync"
)]
struct Cli {
    /// A stopped local runner's DATA_DIR; without it, AWS from TABLE_NAME, <STAGE>_QUEUE_URL, <STAGE>_DLQ_URL, AWS_ENDPOINT_URL.
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Dead-letter queues.
    Dlq {
        #[command(subcommand)]
        action: DlqAction,
    },
    /// An entity's cross-references and recent events: deal:<uuid>, install:<id>, customer:<id>, crm:<id>.
    Entity {
        reference: String,
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// One event in the event log.
    Event {
        #[command(subcommand)]
        action: EventAction,
    },
    /// Enqueue every Enerflo install status, milestone completion and customer never synced or
    /// different from what was synced (the reconciliation engine); resumable after Ctrl-C.
    Backfill {
        /// Only records Enerflo changed at or after this time (RFC 3339, or a date).
        #[arg(long)]
        since: Option<String>,
        /// leads, milestone, status (comma-separated; default all three).
        #[arg(long)]
        stage: Option<String>,
        /// Report per stage what would be created, updated or left unchanged; write nothing.
        #[arg(long)]
        dry_run: bool,
        /// A running local runner's URL (e.g. http://127.0.0.1:3000): it runs the backfill itself.
        #[arg(long)]
        runner: Option<String>,
        /// The runner's CRM inbound token (default: CRM_INBOUND_TOKEN, else the local runner's
        /// `local-crm-token`).
        #[arg(long)]
        runner_token: Option<String>,
    },
    /// The HubSpot portal of CRM_CONNECTOR=hubspot (implied here; reads HUBSPOT_* like the functions).
    Hubspot {
        #[command(subcommand)]
        action: HubspotAction,
    },
    /// The Monday.com boards of CRM_CONNECTOR=monday (implied here; reads MONDAY_* like the functions).
    Monday {
        #[command(subcommand)]
        action: MondayAction,
    },
    /// The Salesforce org of CRM_CONNECTOR=salesforce (implied here; reads SALESFORCE_* like the functions).
    Salesforce {
        #[command(subcommand)]
        action: SalesforceAction,
    },
    /// Check the Enerflo key and the CRM connector with the functions' variables, list the
    /// company's install statuses (and an install's milestone ids), and print the Enerflo
    /// subscription URLs and the CRM-side calls. Exits 1 when anything is wrong.
    Doctor {
        /// The API's public base URL: the stack's ApiBaseUrl output (or the local runner's URL).
        #[arg(long)]
        public_url: Option<String>,
        /// An install whose milestone ids to list and check MILESTONE_KEY_MAP against.
        #[arg(long)]
        install: Option<u64>,
    },
}

#[derive(Subcommand)]
enum MondayAction {
    /// Check the boards and columns the profile names (types included) and the status labels;
    /// with --create make what is missing, with --webhook-url create the board webhooks. Changes
    /// no existing column; exits 1 when anything is wrong or missing.
    Setup {
        /// Create missing columns and status labels.
        #[arg(long)]
        create: bool,
        /// The public base URL Monday calls (the API's URL): create the board webhooks under it.
        #[arg(long)]
        webhook_url: Option<String>,
    },
}

#[derive(Subcommand)]
enum SalesforceAction {
    /// Describe the profile's objects and report every missing field (with the type to create),
    /// every key that is not an External ID and Unique, every missing stage picklist value and
    /// the org id against SALESFORCE_ORG_ID; print the Flow HTTP Callout and Outbound Message
    /// configuration. Changes nothing; exits 1 when anything is to fix.
    Setup {
        /// The API's public base URL (the stack's ApiBaseUrl output).
        #[arg(long)]
        public_url: Option<String>,
    },
}

#[derive(Subcommand)]
enum HubspotAction {
    /// Create the `enerflo` property group and the profile's properties, check the pipeline and
    /// its stages, and print each workflow's webhook. Changes no existing property; exits 1 when
    /// anything is wrong.
    Setup {
        /// Create nothing; list what would be created.
        #[arg(long)]
        dry_run: bool,
        /// The public base URL HubSpot calls (default HUBSPOT_PUBLIC_URL).
        #[arg(long)]
        public_url: Option<String>,
    },
}

#[derive(clap::Args, Clone)]
struct FilterArgs {
    /// leads, project, milestone, status, note, change_order
    #[arg(long)]
    stage: Option<String>,
    /// Only dead letters that failed at or after this RFC 3339 time.
    #[arg(long)]
    since: Option<String>,
    /// Only dead letters that failed at or before this RFC 3339 time.
    #[arg(long)]
    until: Option<String>,
    /// Only this entity's (FIFO group's) dead letters, e.g. install:700001.
    #[arg(long)]
    entity: Option<String>,
}

#[derive(Subcommand)]
enum DlqAction {
    /// List dead letters with their reasons.
    List {
        #[command(flatten)]
        filter: FilterArgs,
        /// Include bodies.
        #[arg(long)]
        full: bool,
    },
    /// Send dead letters back to their queue.
    Replay {
        #[command(flatten)]
        filter: FilterArgs,
        /// Show what would be replayed, change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Subcommand)]
enum EventAction {
    /// Show an event, with its raw body.
    Show { dedupe_key: String },
    /// Enqueue an event again from its stored raw body.
    Rerun { dedupe_key: String },
}

fn filter_of(args: &FilterArgs) -> anyhow::Result<Filter> {
    Ok(Filter {
        stage: args
            .stage
            .as_deref()
            .map(|s| Stage::parse(s).ok_or_else(|| anyhow::anyhow!("unknown stage `{s}`")))
            .transpose()?,
        since: args.since.as_deref().map(parse_time).transpose()?,
        until: args.until.as_deref().map(parse_time).transpose()?,
        entity: args.entity.clone(),
        message_ids: None,
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Command::Backfill {
        since,
        stage,
        dry_run,
        runner,
        runner_token,
    } = &cli.command
    {
        let backfill = Backfill {
            stages: match stage {
                Some(s) => parse_stages(s).map_err(|e| anyhow::anyhow!("--stage: {e}"))?,
                None => SWEEPABLE.to_vec(),
            },
            since: since
                .as_deref()
                .map(parse_since)
                .transpose()
                .map_err(|e| anyhow::anyhow!("--since: {e}"))?,
            dry_run: *dry_run,
        };
        let token = runner_token
            .clone()
            .or_else(|| std::env::var("CRM_INBOUND_TOKEN").ok())
            .and_then(|t| t.split(',').next().map(|t| t.trim().to_owned()))
            .unwrap_or_else(|| "local-crm-token".into());
        return backfill_command(&cli, &backfill, runner.as_deref(), &token).await;
    }
    if let Command::Hubspot {
        action: HubspotAction::Setup {
            dry_run,
            public_url,
        },
    } = &cli.command
    {
        let config = hubspot::config_from(|k| std::env::var(k).ok())?;
        let options = hubspot::SetupOptions {
            dry_run: *dry_run,
            public_url: public_url.clone(),
        };
        let report = hubspot::setup(&config, &options).await?;
        if cli.json {
            println!("{}", serde_json::to_string_pretty(&report.to_json())?);
        } else {
            print!("{}", report.to_text());
        }
        if report.has_problems() {
            std::process::exit(1);
        }
        return Ok(());
    }
    if let Command::Monday {
        action: MondayAction::Setup {
            create,
            webhook_url,
        },
    } = &cli.command
    {
        let config = monday::config_from(|k| std::env::var(k).ok())?;
        let options = monday::SetupOptions {
            create: *create,
            webhook_url: webhook_url.clone(),
        };
        let report = monday::setup(&config, &options).await?;
        if cli.json {
            println!("{}", serde_json::to_string_pretty(&report.to_json())?);
        } else {
            print!("{}", report.to_text());
        }
        if report.has_problems() {
            std::process::exit(1);
        }
        return Ok(());
    }
    if let Command::Salesforce {
        action: SalesforceAction::Setup { public_url },
    } = &cli.command
    {
        let config = salesforce::config_from(|k| std::env::var(k).ok())?;
        let options = salesforce::SetupOptions {
            public_url: public_url.clone(),
        };
        let report = salesforce::setup(&config, &options).await?;
        if cli.json {
            println!("{}", serde_json::to_string_pretty(&report.to_json())?);
        } else {
            print!("{}", report.to_text());
        }
        if report.has_problems() {
            std::process::exit(1);
        }
        return Ok(());
    }
    if let Command::Doctor {
        public_url,
        install,
    } = &cli.command
    {
        let config = Config::from_env()?;
        let options = doctor::DoctorOptions {
            public_url: public_url.clone(),
            install: *install,
            ..doctor::DoctorOptions::default()
        };
        let report = doctor::doctor(&config, &options).await;
        if cli.json {
            println!("{}", serde_json::to_string_pretty(&report.to_json())?);
        } else {
            print!("{}", report.to_text());
        }
        if report.has_problems() {
            std::process::exit(1);
        }
        return Ok(());
    }
    let backend = match &cli.data_dir {
        Some(dir) => Backend::local(dir)?,
        None => {
            let table = Config::from_env()?
                .table_access()
                .map_err(|e| anyhow::anyhow!("{e} (or pass --data-dir for a local runner)"))?;
            Backend::aws(&table).await?
        }
    };
    match cli.command {
        Command::Dlq {
            action: DlqAction::List { filter, full },
        } => {
            let dead = list_dead_letters(&backend, &filter_of(&filter)?).await?;
            if cli.json {
                let items: Vec<_> = dead
                    .iter()
                    .map(|d| {
                        let mut v = serde_json::to_value(d).unwrap_or_default();
                        if !full && let Some(o) = v.as_object_mut() {
                            o.remove("body");
                        }
                        v
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&items)?);
            } else {
                for d in &dead {
                    let group = d.attributes.get("group").map(String::as_str).unwrap_or("-");
                    let event = d.attributes.get("event").map(String::as_str).unwrap_or("-");
                    println!(
                        "{}  {}  {}  {}  attempts={}  {}",
                        d.failed_at, d.stage, event, group, d.attempts, d.reason
                    );
                    if full {
                        println!("    {}", d.body);
                    }
                }
                println!("{} dead letter(s)", dead.len());
            }
        }
        Command::Dlq {
            action: DlqAction::Replay { filter, dry_run },
        } => {
            let bar = ProgressBar::new(0);
            bar.set_style(
                ProgressStyle::with_template("{bar:40} {pos}/{len} replayed ({eta} left)")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            let (listed, report) =
                replay(&backend, &filter_of(&filter)?, dry_run, |done, total| {
                    bar.set_length(total as u64);
                    bar.set_position(done as u64);
                })
                .await?;
            bar.finish_and_clear();
            if dry_run {
                for d in &listed {
                    println!("would replay {} ({}): {}", d.message_id, d.stage, d.reason);
                }
                println!("{} dead letter(s) match", listed.len());
            } else {
                println!(
                    "replayed {} of {} dead letter(s)",
                    report.replayed,
                    listed.len()
                );
                for f in &report.failed {
                    eprintln!("failed: {f}");
                }
                if !report.failed.is_empty() {
                    std::process::exit(1);
                }
            }
        }
        Command::Entity { reference, limit } => {
            let report = entity_report(&backend, &reference, limit).await?;
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
        Command::Event {
            action: EventAction::Show { dedupe_key },
        } => {
            let e = event_show(&backend, &dedupe_key).await?;
            let mut v = event_summary(&e);
            v["raw_body"] = serde_json::Value::String(e.raw_body);
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        Command::Hubspot { .. }
        | Command::Monday { .. }
        | Command::Backfill { .. }
        | Command::Doctor { .. }
        | Command::Salesforce { .. } => {
            unreachable!("handled before a backend is built")
        }
        Command::Event {
            action: EventAction::Rerun { dedupe_key },
        } => {
            let meta = event_rerun(&backend, &dedupe_key).await?;
            println!(
                "re-enqueued {} to stage {} (group {})",
                meta.log_key(),
                meta.stage,
                meta.group
            );
        }
    }
    Ok(())
}

async fn backfill_command(
    cli: &Cli,
    backfill: &Backfill,
    runner: Option<&str>,
    token: &str,
) -> anyhow::Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    let on_signal = stop.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            on_signal.store(true, Ordering::SeqCst);
            eprintln!(
                "stopping at the next record (Ctrl-C again quits at once); run the same command again to resume"
            );
            if tokio::signal::ctrl_c().await.is_ok() {
                std::process::exit(130);
            }
        }
    });
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} records ({eta} left) {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let shown = bar.clone();
    let progress: enerflo_sync::reconcile::ProgressFn = Arc::new(move |p| {
        if let Some(total) = p.total {
            shown.set_length(total);
        }
        shown.set_position(p.done);
        shown.set_message(format!(
            "{:?} page {}, {} to sync",
            p.phase, p.page, p.drift
        ));
    });
    let report = match runner {
        Some(url) => run_on_runner(url, token, backfill, stop, progress).await?,
        None => {
            let config = Config::from_env()?;
            let reconciler = reconciler(&config, cli.data_dir.as_deref()).await?;
            run_here(&reconciler, backfill, stop, progress).await
        }
    };
    bar.finish_and_clear();
    if cli.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render(&report));
    }
    if report.failure {
        std::process::exit(1);
    }
    Ok(())
}
