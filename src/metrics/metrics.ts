// A member's Prometheus metrics (`GET /1.0/metrics`, as LXD serves it to trusted clients). One registry per
// member (several members may share a process). Counters and histograms are fed by small observers that the
// engines are handed (MoveObserver, RunObserver); gauges that describe the cluster are read from the store
// when scraped.

import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { Store } from '../store/store.js';

/** What a finished move reports (source side). */
export interface MoveReport {
  ok: boolean;
  /** Seconds from the request to the end (started on the target, if it ran). */
  seconds: number;
  /** Bytes sent to the target. */
  bytes: number;
  /** Seconds the instances were not running (from their stop to their start on the target), if they ran. */
  downtimeSeconds: number | null;
}

/** What the migration engine tells the metrics about its moves. */
export interface MoveObserver {
  moveStarted(): void;
  moveFinished(report: MoveReport): void;
}

/** What the drainer tells the metrics about its runs. */
export interface RunObserver {
  runFinished(action: 'evacuate' | 'restore', outcome: string, seconds: number): void;
}

/** What a scrape reads of the cluster (fresh each time). */
export interface ClusterFacts {
  /** Instance records: where each one is and the power state it should have. */
  instances(): Promise<{ location: string; power: string }[]>;
  /** Members with the epoch ms of their last heartbeat (null: never seen). */
  heartbeats(): Promise<{ member: string; lastSeen: number | null }[]>;
}

const durationBuckets = [0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800];

/** The metrics of one member. */
export class Metrics implements MoveObserver, RunObserver {
  readonly registry = new Registry();
  private readonly movesInFlight: Gauge;
  private readonly movesTotal: Counter;
  private readonly bytesMoved: Counter;
  private readonly moveDuration: Histogram;
  private readonly downtime: Histogram;
  private readonly runDuration: Histogram;
  private readonly storeLatency: Histogram;
  private facts: ClusterFacts | null = null;

  constructor(member: string) {
    this.registry.setDefaultLabels({ member });
    const registers = [this.registry];
    this.movesInFlight = new Gauge({ name: 'roost_moves_in_flight', help: 'Moves this member is sending now', registers });
    this.movesTotal = new Counter({ name: 'roost_moves_total', help: 'Moves this member sent, by result', labelNames: ['result'], registers });
    this.bytesMoved = new Counter({ name: 'roost_moved_bytes_total', help: 'Bytes this member sent to other members in moves', registers });
    this.moveDuration = new Histogram({ name: 'roost_move_duration_seconds', help: 'Duration of the moves this member sent', buckets: durationBuckets, registers });
    this.downtime = new Histogram({
      name: 'roost_instance_downtime_seconds',
      help: 'How long a running instance was down for its move (stop at the source to start at the target)',
      buckets: durationBuckets,
      registers,
    });
    this.runDuration = new Histogram({
      name: 'roost_evacuation_duration_seconds',
      help: 'Duration of the evacuations and restores this member ran as the drainer',
      labelNames: ['action', 'outcome'],
      buckets: durationBuckets,
      registers,
    });
    this.storeLatency = new Histogram({
      name: 'roost_store_txn_duration_seconds',
      help: 'Latency of this member\'s store transactions',
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5],
      registers,
    });
    const facts = (): ClusterFacts | null => this.facts;
    new Gauge({
      name: 'roost_instances',
      help: 'Instances per member and power state (what the cluster records)',
      labelNames: ['location', 'state'],
      registers,
      async collect() {
        this.reset();
        for (const r of (await facts()?.instances()) ?? []) this.inc({ location: r.location, state: r.power === 'RUNNING' ? 'running' : 'stopped' });
      },
    });
    new Gauge({
      name: 'roost_member_heartbeat_age_seconds',
      help: 'Seconds since each member\'s last heartbeat',
      labelNames: ['of'],
      registers,
      async collect() {
        this.reset();
        const now = Date.now();
        for (const h of (await facts()?.heartbeats()) ?? []) if (h.lastSeen !== null) this.set({ of: h.member }, Math.max(0, (now - h.lastSeen) / 1000));
      },
    });
  }

  /** Where the scrape-time gauges read the cluster. */
  readFrom(facts: ClusterFacts): void {
    this.facts = facts;
  }

  moveStarted(): void {
    this.movesInFlight.inc();
  }

  moveFinished(report: MoveReport): void {
    this.movesInFlight.dec();
    this.movesTotal.inc({ result: report.ok ? 'success' : 'failure' });
    if (report.bytes > 0) this.bytesMoved.inc(report.bytes);
    if (report.ok) {
      this.moveDuration.observe(report.seconds);
      if (report.downtimeSeconds !== null) this.downtime.observe(report.downtimeSeconds);
    }
  }

  runFinished(action: 'evacuate' | 'restore', outcome: string, seconds: number): void {
    this.runDuration.observe({ action, outcome }, seconds);
  }

  /** The store, with the latency of every transaction observed. */
  instrument(store: Store): Store {
    const latency = this.storeLatency;
    return new Proxy(store, {
      get(target, prop, receiver) {
        const value = Reflect.get(target, prop, receiver) as unknown;
        if (prop !== 'txn' || typeof value !== 'function') return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
        return async (...args: unknown[]) => {
          const end = latency.startTimer();
          try {
            return await (value as (...a: unknown[]) => Promise<unknown>).apply(target, args);
          } finally {
            end();
          }
        };
      },
    });
  }

  /** The text a scrape gets. */
  async text(): Promise<{ contentType: string; body: string }> {
    return { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }
}
