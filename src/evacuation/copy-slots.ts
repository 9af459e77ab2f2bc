// How many data copies an evacuation or restore runs at once. Either a fixed number (the request's
// `parallel`, or `cluster.evacuation_parallelism` set to a number), or, by default, a number that follows
// the throughput the copies get: a hill climb over rounds of copies. Each round runs at one limit until each
// of its slots has released a copy; its throughput is the bytes of the copies released in it over its
// length. A limit whose added slot brought at least half of what a slot carried on average below it is
// raised again; one whose slot did not is taken back, and the limit holds there, raised by one now and then
// to see whether more bandwidth has come; when a held limit's throughput falls by a third (the network or
// disk got busier) the limit steps down, one slot a round, for as long as the slot taken away carried less
// than that share.
// Pure decisions: the caller says when copies end and what time it is.

/** The number of copy slots, as the pipeline asks for it. */
export interface CopySlots {
  /** Copies that may run at once now. */
  readonly limit: number;
  /** A copy of `bytes` released its slot at `now` (ms). */
  released(bytes: number, now: number): void;
}

/** A fixed number of slots. */
export function fixedSlots(n: number): CopySlots {
  const limit = Math.max(1, Math.floor(n));
  return { limit, released: () => undefined };
}

/** The tuning of the adaptive slots (defaults in `adaptiveDefaults`). */
export interface AdaptiveTuning {
  /** The limit the first round runs at. */
  start: number;
  /** A round lasts at least this long (ms), so that one quick copy is not a measurement. */
  minRoundMs: number;
  /** A raise is kept when the added slot brought more than this share of an average slot's throughput below it. */
  gain: number;
  /** A held limit steps down when the throughput fell by more than this share of the held round's. */
  drop: number;
  /** Rounds held before the limit is raised by one again, to look for more bandwidth. */
  probeEvery: number;
}

export const adaptiveDefaults: AdaptiveTuning = { start: 2, minRoundMs: 100, gain: 0.5, drop: 1 / 3, probeEvery: 4 };

/** Copy slots that follow the throughput, between 1 and `max`. */
export class AdaptiveSlots implements CopySlots {
  private current: number;
  private readonly tuning: AdaptiveTuning;
  /** Start of the round (ms), set by the first release. */
  private roundStart: number | null = null;
  private roundBytes = 0;
  private roundReleases = 0;
  /** The last measured throughput (bytes/ms) at each limit. */
  private readonly measured = new Map<number, number>();
  /**
   * Climbing: each kept raise is followed by another; holding: the limit stays, but for a probe now and then;
   * descending (after the held throughput fell): one slot fewer each round while that costs nothing.
   */
  private phase: 'climbing' | 'holding' | 'descending' = 'climbing';
  /** Descending: the throughput one slot above the current limit. */
  private above = 0;
  /** Holding: the held limit, its throughput, and the rounds held since the last probe. */
  private heldLimit = 0;
  private held = 0;
  private heldRounds = 0;
  /** Every limit the slots took, in order (for the run's log and the tests). */
  readonly history: number[];

  constructor(
    private readonly max: number,
    tuning: Partial<AdaptiveTuning> = {},
  ) {
    this.tuning = { ...adaptiveDefaults, ...tuning };
    this.current = clamp(this.tuning.start, 1, max);
    this.history = [this.current];
  }

  get limit(): number {
    return this.current;
  }

  released(bytes: number, now: number): void {
    if (this.roundStart === null) {
      // The first release opens the first round: the copies before it started together, unmeasured.
      this.roundStart = now;
      return;
    }
    this.roundBytes += bytes;
    this.roundReleases += 1;
    const length = now - this.roundStart;
    if (this.roundReleases < this.current || length < this.tuning.minRoundMs) return;
    this.decide(this.roundBytes / Math.max(1, length));
    this.roundStart = now;
    this.roundBytes = 0;
    this.roundReleases = 0;
  }

  private decide(throughput: number): void {
    const limit = this.current;
    const below = this.measured.get(limit - 1);
    this.measured.set(limit, throughput);
    if (this.phase === 'climbing') {
      if (below === undefined || this.paid(throughput, below, limit - 1)) {
        this.set(limit + 1);
        if (this.current === limit) this.hold(throughput); // at the top already
      } else {
        this.set(limit - 1);
        this.hold(below);
      }
      return;
    }
    if (this.phase === 'descending') {
      if (limit > 1 && !this.paid(this.above, throughput, limit)) {
        this.above = throughput; // the slot taken away carried little: take another
        this.set(limit - 1);
      } else if (this.paid(this.above, throughput, limit)) {
        this.set(limit + 1); // it carried its share: put it back
        this.hold(this.above);
      } else {
        this.hold(throughput);
      }
      return;
    }
    // Holding, or probing one above the held limit.
    if (limit > this.heldLimit) {
      if (this.paid(throughput, this.held, this.heldLimit)) {
        this.phase = 'climbing';
        this.set(limit + 1);
        if (this.current === limit) this.hold(throughput);
      } else {
        this.set(this.heldLimit);
        this.heldRounds = 0;
      }
      return;
    }
    if (throughput < this.held * (1 - this.tuning.drop) && limit > 1) {
      this.phase = 'descending';
      this.above = throughput;
      this.set(limit - 1);
      return;
    }
    this.held = (this.held + throughput) / 2; // the held limit's throughput, smoothed
    this.heldRounds += 1;
    if (this.heldRounds >= this.tuning.probeEvery && limit < this.max) {
      this.heldRounds = 0;
      this.set(limit + 1);
    }
  }

  /** True if `throughput` at more than `limit` slots beats `base` (at `limit`) by the share a new slot must bring. */
  private paid(throughput: number, base: number, limit: number): boolean {
    return throughput > base * (1 + this.tuning.gain / Math.max(1, limit));
  }

  private hold(throughput: number): void {
    this.phase = 'holding';
    this.held = throughput;
    this.heldLimit = this.current;
    this.heldRounds = 0;
  }

  private set(limit: number): void {
    const next = clamp(limit, 1, this.max);
    if (next !== this.current) this.history.push(next);
    this.current = next;
  }
}

function clamp(n: number, low: number, high: number): number {
  return Math.min(high, Math.max(low, Math.floor(n)));
}
