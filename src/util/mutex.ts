// A mutex per key: serialises work on one instance (start, stop, move, delete) within a member.

/** Runs functions one at a time per key, in call order. */
export class KeyedMutex {
  private readonly tails = new Map<string, Promise<unknown>>();

  /** True while work for `key` runs or waits. */
  has(key: string): boolean {
    return this.tails.has(key);
  }

  /** Run `fn` after every earlier `run` with the same key has settled. */
  async run<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const previous = this.tails.get(key) ?? Promise.resolve();
    const result = previous.then(fn, fn);
    const tail = result.catch(() => undefined);
    this.tails.set(key, tail);
    try {
      return await result;
    } finally {
      if (this.tails.get(key) === tail) this.tails.delete(key);
    }
  }
}
