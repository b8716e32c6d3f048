//! The `flotilla-coordinator` binary: reads its configuration, opens its storage,
//! joins or forms the Raft cluster and serves gRPC (with the release engine on the
//! leader) until SIGTERM or Ctrl-C, reloading its certificates on SIGHUP; see [`Daemon`]. `snapshot save|restore` back up a
//! running coordinator and make a new node's data from a backup instead.

use anyhow::Context as _;
use clap::Parser as _;
use flotilla_coordinator::daemon::Daemon;
use flotilla_coordinator::{CoordinatorArgs, CoordinatorCommand, CoordinatorConfig, SnapshotCommand};
use std::io::Write as _;
use std::process::ExitCode;

/// mimalloc: the write path allocates and frees many small buffers on every Tokio
/// worker (gRPC frames, entries, replies), which glibc's allocator serves with locks
/// and consolidation; BENCHMARKS.md has what it changed.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use tokio::signal::unix::{SignalKind, signal};

/// Exit code for a configuration the daemon cannot use (bad usage).
const EXIT_BAD_CONFIG: u8 = 2;

fn main() -> ExitCode {
    // Transparent huge pages off for this process: with THP on (`always`, as many
    // distributions ship it) the allocator's arenas are backed by 2 MiB pages of which
    // a coordinator touches little, so every agent session cost about twice its
    // memory (BENCHMARKS.md, "10,000 agents"). Best effort: a kernel without the
    // prctl leaves it as it was.
    let _ = nix::sys::prctl::set_thp_disable(true);
    let args = CoordinatorArgs::parse();
    let config = match CoordinatorConfig::load(&args) {
        Ok(config) => config,
        Err(err) => {
            let _ = writeln!(std::io::stderr(), "flotilla-coordinator: {err}");
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    if args.check_config {
        let mut out = std::io::stdout().lock();
        return match out.write_all(config.to_toml().as_bytes()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(_) => ExitCode::FAILURE,
        };
    }
    init_tracing();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "flotilla-coordinator: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let work = async {
        match &args.command {
            None => run(config).await,
            Some(CoordinatorCommand::Snapshot(SnapshotCommand::Save { file, from })) => {
                save(&config, from.as_deref(), file).await
            }
            Some(CoordinatorCommand::Snapshot(SnapshotCommand::Restore { file, min_term })) => {
                restore(&config, file, *min_term).await
            }
        }
    };
    match runtime.block_on(work) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            let _ = writeln!(std::io::stderr(), "flotilla-coordinator: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("FLOTILLA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn"));
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(colour).init();
}

async fn run(config: CoordinatorConfig) -> anyhow::Result<()> {
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut hangup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let mut daemon = Daemon::start(&config).await?;
    let mut raft_failed = std::pin::pin!(daemon.raft_failed());
    loop {
        tokio::select! {
            served = daemon.serve_until_stopped() => return served.map_err(Into::into),
            why = &mut raft_failed => {
                tracing::error!(error = %why, "raft stopped: this coordinator cannot take part in the cluster; stopping");
                let _ = daemon.stop().await;
                anyhow::bail!(
                    "raft stopped: {why}; fix the cause (free space on a full disk, replace a failed one) and \
                     start the coordinator again"
                );
            }
            _ = term.recv() => {
                tracing::info!("SIGTERM: shutting down");
                break;
            }
            _ = tokio::signal::ctrl_c() => {
                tracing::info!("interrupted: shutting down");
                break;
            }
            _ = hangup.recv() => match daemon.reload_certificates() {
                Ok(()) => tracing::info!("SIGHUP: certificates reloaded"),
                Err(e) => tracing::error!("SIGHUP: the certificates cannot be used, the old ones stay: {e}"),
            },
        }
    }
    let _ = daemon.stop().await;
    Ok(())
}

/// `snapshot save`: streams a backup from a running coordinator into `file`, checks
/// that it reads back whole, then moves it into place.
async fn save(config: &CoordinatorConfig, from: Option<&str>, file: &std::path::Path) -> anyhow::Result<()> {
    use flotilla_proto::v1;
    use flotilla_proto::v1::cluster_client::ClusterClient;

    let addr = from.map_or_else(|| config.advertise_addr(), str::to_owned);
    let security = match config.transport().map_err(|e| anyhow::anyhow!("{e}"))? {
        flotilla_shared::transport::Transport::Tls(files) => {
            flotilla_net::ClientSecurity::Tls(flotilla_net::TlsMaterial::load(&files)?)
        }
        flotilla_shared::transport::Transport::Insecure => flotilla_net::ClientSecurity::Insecure,
    };
    let channel = flotilla_net::channel(&addr, &security)?;
    let mut client = ClusterClient::new(channel).max_decoding_message_size(4 * flotilla_coordinator::backup::CHUNK);
    let mut stream =
        client.backup(v1::BackupRequest {}).await.with_context(|| format!("asking {addr} for a backup"))?.into_inner();
    let tmp = file.with_extension("partial");
    let mut out = std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let mut info = None;
    let mut written = 0u64;
    while let Some(chunk) = stream.message().await.with_context(|| format!("receiving the backup from {addr}"))? {
        if info.is_none() {
            info = chunk.info;
        }
        out.write_all(&chunk.data).with_context(|| format!("writing {}", tmp.display()))?;
        written += chunk.data.len() as u64;
    }
    out.sync_all().with_context(|| format!("syncing {}", tmp.display()))?;
    drop(out);
    let info = info.ok_or_else(|| anyhow::anyhow!("{addr} sent a backup without its description"))?;
    if written != info.size_bytes {
        let _ = std::fs::remove_file(&tmp);
        anyhow::bail!("{addr} announced {} bytes and sent {written}: the backup is incomplete", info.size_bytes);
    }
    flotilla_coordinator::backup::read(&tmp).map_err(|e| anyhow::anyhow!("the backup does not read back: {e}"))?;
    std::fs::rename(&tmp, file).with_context(|| format!("moving the backup to {}", file.display()))?;
    let mut stdout = std::io::stdout().lock();
    writeln!(
        stdout,
        "saved {} ({written} bytes): node {} at log index {} (term {}), {} releases, {} hosts, format {}",
        file.display(),
        info.node_id,
        info.last_log_index,
        info.last_log_term,
        info.releases,
        info.hosts,
        info.format_version
    )?;
    Ok(())
}

/// `snapshot restore`: makes this node's data directory from a backup.
async fn restore(config: &CoordinatorConfig, file: &std::path::Path, min_term: u64) -> anyhow::Result<()> {
    let restored = flotilla_coordinator::backup::restore(file, config, min_term).await?;
    let members: Vec<String> = restored.members.iter().map(|(id, addr)| format!("{id}={addr}")).collect();
    let mut stdout = std::io::stdout().lock();
    writeln!(
        stdout,
        "restored {} into {} for node {}: log index {}, {} releases; cluster {}; the first election starts above term {}",
        file.display(),
        config.data_dir.display(),
        config.node_id,
        restored.last_log_index,
        restored.releases,
        members.join(","),
        restored.term
    )?;
    Ok(())
}
