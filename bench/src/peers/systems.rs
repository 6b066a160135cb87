//! The systems under test: how each is started for one run, what its processes are, how to know
//! that everything it acknowledged has reached the far end, and how it is stopped.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use metricstream_backend::kafka::{KafkaSettings, admin};

use super::Suite;
use crate::drain::consumer_process::{ConsumerProcess, Sink, Source};
use crate::drain_store::victoriametrics::VictoriaMetrics;
use crate::http::{IngestCommand, STOP_TIMEOUT, get_text, prometheus_sample};
use crate::process::{Process, free_loopback_addr};

/// Partitions of every queue and topic (the services' default).
const PARTITIONS: u32 = 4;
/// The consumer group of MetricStream's remote-write runs.
const GROUP: &str = "bench-peers";
/// How often delivery progress is read after the load.
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// How long a peer may take to answer at all after its start.
const START_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum System {
    /// `metricstream-ingest --backend kafka`.
    MetricStreamKafka,
    /// The OpenTelemetry Collector: `otlp` receiver → `kafka` exporter with a `file_storage` queue.
    Collector,
    /// `metricstream-ingest` (file queue, batch durability) and `metricstream-consumer`'s
    /// remote-write sink.
    MetricStreamStore,
    /// vmagent with its persistent queue.
    Vmagent,
}

impl System {
    /// The measurement's target name.
    pub fn target(self) -> &'static str {
        match self {
            System::MetricStreamKafka | System::MetricStreamStore => "metricstream",
            System::Collector => "otelcol",
            System::Vmagent => "vmagent",
        }
    }

    /// The processes whose CPU time and memory are counted.
    pub fn processes(self) -> &'static str {
        match self {
            System::MetricStreamKafka => "ingest",
            System::Collector => "otelcol",
            System::MetricStreamStore => "ingest+consumer",
            System::Vmagent => "vmagent",
        }
    }

    /// Starts the system (and its far end, when it is per run) in `dir`.
    pub(super) async fn start(self, suite: &Suite, dir: &Path) -> anyhow::Result<Running> {
        let logs = dir.join("logs");
        let listen = free_loopback_addr()?;
        let base_url = format!("http://{listen}");
        let (launches, far_end, topic, far_command) = match self {
            System::MetricStreamKafka => {
                let bootstrap = suite.kafka_bootstrap()?;
                let topic = metricstream_tests::kafka::unique_name("bench-peers-metricstream");
                let args = [
                    "--backend",
                    "kafka",
                    "--kafka-brokers",
                    bootstrap,
                    "--topic",
                    &topic,
                    "--kafka-create-topic",
                    "--partitions",
                    &PARTITIONS.to_string(),
                    "--listen",
                    &listen.to_string(),
                ]
                .map(str::to_owned);
                let ingest = Launch::ingest(suite, &args)?;
                let topic = kafka_settings(bootstrap, &topic);
                (
                    vec![ingest],
                    FarEnd::AnsweredWhenDelivered,
                    Some(topic),
                    None,
                )
            }
            System::Collector => {
                let (launch, topic) =
                    collector_launch(suite, dir, &base_url, listen.port()).await?;
                let metrics_url = match &launch.how {
                    How::Process {
                        ready: Ready::CollectorUp { metrics_url, .. },
                        ..
                    } => metrics_url.clone(),
                    _ => bail!("the Collector's launch has no metrics endpoint"),
                };
                (
                    vec![launch],
                    FarEnd::CollectorSent { metrics_url },
                    Some(topic),
                    None,
                )
            }
            System::MetricStreamStore => {
                let store =
                    VictoriaMetrics::start(&dir.join("store"), &logs.join("victoriametrics.log"))
                        .await?;
                let data_dir = dir.join("data");
                let args = [
                    "--backend",
                    "file",
                    "--data-dir",
                    &data_dir.display().to_string(),
                    "--partitions",
                    &PARTITIONS.to_string(),
                    "--durability",
                    "batch",
                    "--listen",
                    &listen.to_string(),
                ]
                .map(str::to_owned);
                let ingest = Launch::ingest(suite, &args)?;
                let consumer = Launch {
                    label: "consumer",
                    how: How::Consumer {
                        data_dir,
                        sink_dir: dir.join("sink"),
                        write_url: store.write_url(),
                    },
                };
                let command = store.command.clone();
                (
                    vec![ingest, consumer],
                    FarEnd::Store(Box::new(store)),
                    None,
                    Some(command),
                )
            }
            System::Vmagent => {
                let store =
                    VictoriaMetrics::start(&dir.join("store"), &logs.join("victoriametrics.log"))
                        .await?;
                let args = vec![
                    format!("-httpListenAddr={listen}"),
                    format!("-remoteWrite.url={}", store.write_url()),
                    format!("-remoteWrite.tmpDataPath={}", dir.join("queue").display()),
                    "-loggerLevel=WARN".to_owned(),
                ];
                let vmagent = Launch {
                    label: "vmagent",
                    how: How::Process {
                        program: suite.vmagent()?.to_path_buf(),
                        args,
                        env: Vec::new(),
                        ready: Ready::Ok(format!("{base_url}/health")),
                    },
                };
                let command = store.command.clone();
                (
                    vec![vmagent],
                    FarEnd::Store(Box::new(store)),
                    None,
                    Some(command),
                )
            }
        };
        let mut running = Running {
            command: String::new(),
            base_url,
            logs,
            launches,
            processes: Vec::new(),
            far_end,
            topic,
            starts: 0,
        };
        // Stopped (and the topic deleted) if a process does not come up.
        if let Err(error) = running.launch_all(&suite.http).await {
            let _ = running.stop().await;
            return Err(error);
        }
        let mut commands: Vec<String> = running
            .processes
            .iter()
            .map(|p| p.command.clone())
            .collect();
        commands.extend(far_command);
        running.command = commands.join("\n");
        Ok(running)
    }
}

/// How to start one process of a system, again after a SIGKILL too.
struct Launch {
    label: &'static str,
    how: How,
}

enum How {
    /// `metricstream-ingest`, started and readied as every bench ingest is.
    Ingest(IngestCommand),
    /// A peer's process, up once `ready` says so.
    Process {
        program: PathBuf,
        args: Vec<String>,
        env: Vec<(&'static str, OsString)>,
        ready: Ready,
    },
    /// `metricstream-consumer` of the file queue in `data_dir`, writing to the store.
    Consumer {
        data_dir: PathBuf,
        sink_dir: PathBuf,
        write_url: String,
    },
}

/// When a started process counts as up.
enum Ready {
    /// `url` answers 200.
    Ok(String),
    /// The Collector: its metrics answer 200, then its OTLP receiver answers at all.
    CollectorUp {
        metrics_url: String,
        otlp_url: String,
    },
}

impl Launch {
    /// `metricstream-ingest` with `args`, an admin listener of its own, ready at `/readyz`.
    fn ingest(suite: &Suite, args: &[String]) -> anyhow::Result<Self> {
        let command = IngestCommand::new(&suite.bin_dir, args, free_loopback_addr()?)?;
        Ok(Self {
            label: "ingest",
            how: How::Ingest(command),
        })
    }
}

/// The Collector's launch on its own topic (made first, with the partitions MetricStream's
/// has), its persistent queue in `dir`, its own metrics on a port of their own.
async fn collector_launch(
    suite: &Suite,
    dir: &Path,
    base_url: &str,
    otlp_port: u16,
) -> anyhow::Result<(Launch, KafkaSettings)> {
    let bootstrap = suite.kafka_bootstrap()?;
    let (binary, config) = suite.otelcol()?;
    let config =
        std::path::absolute(config).with_context(|| format!("resolving {}", config.display()))?;
    anyhow::ensure!(
        config.is_file(),
        "the Collector's configuration {} does not exist (run from the repository root)",
        config.display()
    );
    let topic = kafka_settings(
        bootstrap,
        &metricstream_tests::kafka::unique_name("bench-peers-otelcol"),
    );
    admin::ensure_topic(&topic, 1, &[])
        .await
        .with_context(|| format!("creating topic {}", topic.topic))?;
    let storage = dir.join("queue");
    std::fs::create_dir_all(&storage).with_context(|| format!("creating {}", storage.display()))?;
    let telemetry = free_loopback_addr()?;
    let env: Vec<(&'static str, OsString)> = vec![
        ("PEER_OTLP_HTTP_PORT", otlp_port.to_string().into()),
        ("PEER_KAFKA_BROKERS", bootstrap.into()),
        ("PEER_KAFKA_TOPIC", topic.topic.clone().into()),
        ("PEER_STORAGE_DIR", storage.into()),
        ("PEER_TELEMETRY_PORT", telemetry.port().to_string().into()),
    ];
    let launch = Launch {
        label: "otelcol",
        how: How::Process {
            program: binary.to_path_buf(),
            args: vec![format!("--config={}", config.display())],
            env,
            ready: Ready::CollectorUp {
                metrics_url: format!("http://{telemetry}/metrics"),
                otlp_url: format!("{base_url}/v1/metrics"),
            },
        },
    };
    Ok((launch, topic))
}

/// Waits until `url` answers at all (the Collector opens its receivers last).
async fn wait_answering(
    process: &mut Process,
    http: &reqwest::Client,
    url: &str,
) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        process.check_running()?;
        if http.get(url).send().await.is_ok() {
            return Ok(());
        }
        anyhow::ensure!(
            started.elapsed() < START_TIMEOUT,
            "{url} did not answer within {START_TIMEOUT:?}; see {}",
            process.log_path().display()
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// A process's line in the report: its `PEER_` variables (the Collector's configuration reads
/// them), its program's name and its arguments.
fn command_line(program: &Path, args: &[String], env: &[(&'static str, OsString)]) -> String {
    let name = program.file_name().map_or_else(
        || program.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let env_line: Vec<String> = env
        .iter()
        .filter(|(key, _)| key.starts_with("PEER_"))
        .map(|(key, value)| format!("{key}={}", value.to_string_lossy()))
        .chain(std::iter::once(name))
        .collect();
    format!("{} {}", env_line.join(" "), args.join(" "))
}

fn kafka_settings(bootstrap: &str, topic: &str) -> KafkaSettings {
    KafkaSettings {
        brokers: bootstrap.to_owned(),
        topic: topic.to_owned(),
        partitions: PARTITIONS,
        client_id: "metricstream-bench".to_owned(),
        security: Default::default(),
        extra: Vec::new(),
    }
}

/// A running process of a system under test.
struct Started {
    pid: u32,
    command: String,
    kind: Kind,
}

enum Kind {
    Process(Process),
    Consumer(ConsumerProcess),
}

impl Started {
    async fn terminate(self) -> anyhow::Result<()> {
        match self.kind {
            Kind::Process(process) => process.terminate(STOP_TIMEOUT).await.map(drop),
            Kind::Consumer(consumer) => consumer.terminate().await,
        }
    }
}

/// Where acknowledged samples must end up, and how to tell they have.
enum FarEnd {
    /// The system answers only once the far end has the samples.
    AnsweredWhenDelivered,
    /// The Collector's own count of points its exporter sent (Kafka acknowledged them).
    CollectorSent { metrics_url: String },
    /// The store's count of rows added.
    Store(Box<VictoriaMetrics>),
}

/// A started system.
pub(super) struct Running {
    /// How it was started, for the report.
    pub command: String,
    /// `http://<listen>` of the endpoint the load goes to.
    pub base_url: String,
    logs: PathBuf,
    launches: Vec<Launch>,
    processes: Vec<Started>,
    far_end: FarEnd,
    /// A topic of this run, deleted when the run stops.
    topic: Option<KafkaSettings>,
    /// Starts so far, numbering the log files.
    starts: u32,
}

impl Running {
    pub fn pids(&self) -> Vec<u32> {
        self.processes.iter().map(|p| p.pid).collect()
    }

    /// The run's topic, if it writes to Kafka.
    pub fn topic(&self) -> Option<&KafkaSettings> {
        self.topic.as_ref()
    }

    /// The run's store, if it writes to one.
    pub fn store(&self) -> Option<&VictoriaMetrics> {
        match &self.far_end {
            FarEnd::Store(store) => Some(store),
            _ => None,
        }
    }

    /// Starts every process of the system in order, each once the one before is up.
    async fn launch_all(&mut self, http: &reqwest::Client) -> anyhow::Result<()> {
        self.starts += 1;
        for launch in &self.launches {
            let log = self
                .logs
                .join(format!("{}.{}.log", launch.label, self.starts));
            let (kind, pid, command) = match &launch.how {
                How::Ingest(ingest) => {
                    let process = ingest.start(http, &log).await?;
                    let pid = process.pid()?;
                    let command = command_line(&ingest.program, &ingest.args, &[]);
                    (Kind::Process(process), pid, command)
                }
                How::Process {
                    program,
                    args,
                    env,
                    ready,
                } => {
                    let mut process = Process::spawn(launch.label, program, args, env, &log)?;
                    let pid = process.pid()?;
                    match ready {
                        Ready::Ok(url) => process.wait_ready(http, url).await?,
                        Ready::CollectorUp {
                            metrics_url,
                            otlp_url,
                        } => {
                            process.wait_ready(http, metrics_url).await?;
                            wait_answering(&mut process, http, otlp_url).await?;
                        }
                    }
                    (
                        Kind::Process(process),
                        pid,
                        command_line(program, args, env),
                    )
                }
                How::Consumer {
                    data_dir,
                    sink_dir,
                    write_url,
                } => {
                    let consumer = ConsumerProcess::spawn(
                        &Source::File { data_dir },
                        PARTITIONS,
                        GROUP,
                        &Sink::RemoteWrite {
                            dir: sink_dir,
                            url: write_url,
                            max_samples_per_request: 5000,
                            concurrency: 4,
                        },
                        &log,
                        None,
                    )?;
                    let pid = consumer.pid();
                    let command = consumer.command.clone();
                    (Kind::Consumer(consumer), pid, command)
                }
            };
            self.processes.push(Started { pid, command, kind });
        }
        Ok(())
    }

    /// SIGKILLs every process of the system at once, then starts them again on the same
    /// directories and ports; returns how long the system was down.
    pub async fn kill_and_restart(&mut self, http: &reqwest::Client) -> anyhow::Result<Duration> {
        let killed = Instant::now();
        for started in &self.processes {
            let pid = libc::pid_t::try_from(started.pid).context("a pid that fits pid_t")?;
            // SAFETY: kill(2) on a child this run started and has not reaped yet.
            if unsafe { libc::kill(pid, libc::SIGKILL) } != 0 {
                return Err(std::io::Error::last_os_error())
                    .with_context(|| format!("SIGKILL to pid {pid}"));
            }
        }
        // Every process got its SIGKILL before any is waited for, so they die together; each
        // is reaped before the restart, which needs its ports and locks.
        for started in &mut self.processes {
            match &mut started.kind {
                Kind::Process(process) => process.wait_exit().await?,
                Kind::Consumer(consumer) => consumer.wait_exit().await?,
            };
        }
        self.processes.clear();
        self.launch_all(http).await?;
        Ok(killed.elapsed())
    }

    /// Waits until the far end holds `samples` samples (all acknowledged ones).
    pub async fn wait_delivered(
        &mut self,
        http: &reqwest::Client,
        samples: f64,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        match &mut self.far_end {
            FarEnd::AnsweredWhenDelivered => Ok(()),
            FarEnd::Store(store) => store.wait_rows_added(samples, timeout).await,
            FarEnd::CollectorSent { metrics_url } => {
                let started = Instant::now();
                loop {
                    let text = get_text(http, metrics_url).await?;
                    // Without the `_total` suffix in this Collector's exposition; with it in
                    // others.
                    let sent = [
                        "otelcol_exporter_sent_metric_points",
                        "otelcol_exporter_sent_metric_points_total",
                    ]
                    .iter()
                    .find_map(|name| prometheus_sample(&text, name))
                    .unwrap_or(0.0);
                    if sent >= samples {
                        return Ok(());
                    }
                    anyhow::ensure!(
                        started.elapsed() < timeout,
                        "the Collector sent {sent} of {samples} points to Kafka within {timeout:?}"
                    );
                    tokio::time::sleep(POLL_INTERVAL).await;
                }
            }
        }
    }

    /// Stops every process (SIGTERM), then the store, and deletes the run's topic.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        let mut first_error = None;
        for started in self.processes.drain(..) {
            if let Err(error) = started.terminate().await {
                first_error.get_or_insert(error);
            }
        }
        if let FarEnd::Store(store) =
            std::mem::replace(&mut self.far_end, FarEnd::AnsweredWhenDelivered)
            && let Err(error) = store.terminate().await
        {
            first_error.get_or_insert(error);
        }
        if let Some(topic) = self.topic.take()
            && let Err(error) = admin::delete_topic(&topic).await
        {
            eprintln!("peers: could not delete topic {}: {error}", topic.topic);
        }
        first_error.map_or(Ok(()), Err)
    }
}
