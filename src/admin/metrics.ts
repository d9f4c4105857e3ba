// Prometheus metrics (prom-client), on GET /metrics of the admin interface.
//
// Counters and histograms follow the driver's events (NodeEvent) and the
// journal's batches; gauges are read from the node's status at scrape time,
// so they are never stale. Names follow Prometheus conventions: a qsync_
// prefix, base units (seconds, bytes), _total for counters.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { NodeEvent } from '../sidecar/io.js';
import type { SidecarStatus } from '../sidecar/status.js';

/** Latency buckets from 0.5 ms to 10 s. */
const SECONDS_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

export class Metrics {
  readonly registry = new Registry();
  readonly #commits: Counter<'mode' | 'outcome'>;
  readonly #confirmSeconds: Histogram;
  readonly #fsyncSeconds: Histogram;
  readonly #batchRecords: Histogram;
  readonly #elections: Counter<'result'>;
  readonly #splitBrain: Counter;
  readonly #staleTerm: Counter<'where'>;
  readonly #limboTimeouts: Counter;
  readonly #refused: Counter<'port' | 'reason'>;
  readonly #reads: Counter<'outcome'>;
  readonly #readIndexSeconds: Histogram;
  readonly #status: () => SidecarStatus;
  /** One status per scrape, read by every gauge. */
  #snapshot: SidecarStatus | null = null;

  constructor(status: () => SidecarStatus, labels: { cluster: string; replica: number }) {
    this.#status = status;
    const registers = [this.registry];
    this.registry.setDefaultLabels({ cluster: labels.cluster, replica: String(labels.replica) });
    collectDefaultMetrics({ register: this.registry, prefix: 'qsync_' });
    this.#commits = new Counter({ name: 'qsync_commits_total', help: 'Writes finished, by the tables they touched (sync, async, local; none: refused before running) and outcome', labelNames: ['mode', 'outcome'], registers });
    this.#confirmSeconds = new Histogram({ name: 'qsync_confirm_latency_seconds', help: 'Time a committed sync transaction waited in the limbo for its quorum', buckets: SECONDS_BUCKETS, registers });
    this.#fsyncSeconds = new Histogram({ name: 'qsync_journal_fsync_seconds', help: 'Journal batch write and fdatasync latency', buckets: SECONDS_BUCKETS, registers });
    this.#batchRecords = new Histogram({ name: 'qsync_journal_batch_records', help: 'Records per journal batch (one fdatasync each)', buckets: [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024], registers });
    this.#elections = new Counter({ name: 'qsync_elections_total', help: 'Elections this node took part in as a candidate (result started) and won (result won: a quorum holds its PROMOTE)', labelNames: ['result'], registers });
    this.#splitBrain = new Counter({ name: 'qsync_split_brain_rejections_total', help: 'Limbo records from an older term taken without effect (a deposed leader\'s writes)', registers });
    this.#staleTerm = new Counter({ name: 'qsync_stale_term_rejections_total', help: 'Writes refused for naming an older term (where: the sidecar, or PostgreSQL\'s fence)', labelNames: ['where'], registers });
    this.#limboTimeouts = new Counter({ name: 'qsync_limbo_timeouts_total', help: 'Synchro timeouts: no quorum in time, a ROLLBACK written', registers });
    this.#refused = new Counter({ name: 'qsync_connections_refused_total', help: 'Connections closed by a port\'s guard (reason: a connection cap) and failed logins (reason login)', labelNames: ['port', 'reason'], registers });
    this.#reads = new Counter({ name: 'qsync_linearizable_reads_total', help: 'Linearizable reads asked of this node: served after the read index, or refused (not the leader, no quorum confirmed it in time)', labelNames: ['outcome'], registers });
    this.#readIndexSeconds = new Histogram({ name: 'qsync_read_index_seconds', help: 'Time a linearizable read waited for its read index (a quorum\'s heartbeat answers, PostgreSQL caught up)', buckets: SECONDS_BUCKETS, registers });
    // Initialised to 0, so that rate() works from the first scrape.
    for (const result of ['started', 'won']) this.#elections.inc({ result }, 0);
    for (const where of ['sidecar', 'postgres']) this.#staleTerm.inc({ where }, 0);
    for (const outcome of ['served', 'refused']) this.#reads.inc({ outcome }, 0);

    const gauge = (name: string, help: string, read: (s: SidecarStatus, set: (value: number, labels?: Record<string, string>) => void) => void, labelNames: string[] = []): void => {
      const metric: Gauge = new Gauge({
        name, help, labelNames, registers,
        collect: () => {
          read(this.#snapshot ?? status(), (value, l) => (l === undefined ? metric.set(value) : metric.set(l, value)));
        },
      });
    };
    gauge('qsync_term', 'The current Raft term', (s, set) => set(s.term));
    gauge('qsync_leader', '1 while this node accepts sync writes', (s, set) => set(s.writable ? 1 : 0));
    gauge('qsync_limbo_length', 'Sync transactions waiting for their quorum (on the leader)', (s, set) => set(s.limbo.pending));
    gauge('qsync_limbo_oldest_age_seconds', 'Age of the oldest transaction in the limbo', (s, set) => set(s.limbo.oldestAgeMs / 1000));
    gauge('qsync_replication_lag_records', 'Records of this journal a peer has not acknowledged', (s, set) => s.peers.forEach((p) => set(p.lagRecords, { peer: String(p.replica) })), ['peer']);
    gauge('qsync_replication_lag_seconds', 'Age of the oldest record a peer has not acknowledged', (s, set) => s.peers.forEach((p) => set(p.lagMs / 1000, { peer: String(p.replica) })), ['peer']);
    gauge('qsync_peer_connected', '1 while the link to a peer is up', (s, set) => s.peers.forEach((p) => set(p.connected ? 1 : 0, { peer: String(p.replica) })), ['peer']);
    gauge('qsync_postgres_up', '1 while this node\'s PostgreSQL answers the health probe', (s, set) => set(s.postgres.reachable ? 1 : 0));
    gauge('qsync_postgres_prepared_transactions', 'Prepared transactions in this node\'s PostgreSQL (as of the last health probe)', (s, set) => set(s.postgres.prepared ?? 0));
  }

  observe(event: NodeEvent): void {
    switch (event.kind) {
      case 'commit':
        this.#commits.inc({ mode: event.mode, outcome: event.outcome });
        if (event.limboMs !== null) this.#confirmSeconds.observe(event.limboMs / 1000);
        return;
      case 'campaign':
        this.#elections.inc({ result: 'started' });
        return;
      case 'elected':
        this.#elections.inc({ result: 'won' });
        return;
      case 'splitBrain':
        this.#splitBrain.inc();
        return;
      case 'staleTerm':
        this.#staleTerm.inc({ where: 'sidecar' });
        return;
      case 'limboTimeout':
        this.#limboTimeouts.inc();
        return;
      case 'readIndex':
        this.#reads.inc({ outcome: event.outcome });
        if (event.outcome === 'served') this.#readIndexSeconds.observe(event.ms / 1000);
        return;
      default:
    }
  }

  /** A port's guard closed a connection at a cap, or a login failed (net/guard.ts). */
  refused(port: string, reason: 'cap' | 'login'): void {
    this.#refused.inc({ port, reason });
  }

  /** PostgreSQL's fence refused a write for its term (SQLSTATE QS002). */
  fenceStaleTerm(): void {
    this.#staleTerm.inc({ where: 'postgres' });
  }

  journalBatch(records: number, fsyncMs: number): void {
    this.#fsyncSeconds.observe(fsyncMs / 1000);
    this.#batchRecords.observe(records);
  }

  async text(): Promise<string> {
    this.#snapshot = this.#status();
    try {
      return await this.registry.metrics();
    } finally {
      this.#snapshot = null;
    }
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}
