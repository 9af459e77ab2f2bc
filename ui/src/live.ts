// Data that follows the cluster: loaded once, then loaded again after lifecycle and operation events
// (at most a few times a second, however many events a busy evacuation sends).

import { useCallback, useEffect, useRef, useState } from 'react';
import { errorText } from './api.js';
import { useEvents } from './events.js';

/** Least time between two reloads caused by events. */
const reloadGapMs = 500;

/** What `useLiveData` gives a page: the data (null until loaded), the last load's error, a reload. */
export interface LiveData<T> {
  data: T | null;
  error: string | null;
  reload: () => void;
}

/** Load `load()` now, when the events connection (re)opens, and after events. */
export function useLiveData<T>(load: () => Promise<T>): LiveData<T> {
  const [data, setData] = useState<T | null>(null);
  const [error, setError] = useState<string | null>(null);
  const loader = useRef(load);
  useEffect(() => {
    loader.current = load;
  });
  const pending = useRef<number | undefined>(undefined);
  const generation = useRef(0);

  const reload = useCallback(() => {
    const mine = ++generation.current;
    loader.current().then(
      (value) => {
        if (mine !== generation.current) return;
        setData(value);
        setError(null);
      },
      (err: unknown) => {
        if (mine === generation.current) setError(errorText(err));
      },
    );
  }, []);

  useEffect(() => {
    reload();
    return () => window.clearTimeout(pending.current);
  }, [reload]);

  useEvents(['lifecycle', 'operation'], () => {
    if (pending.current !== undefined) return;
    pending.current = window.setTimeout(() => {
      pending.current = undefined;
      reload();
    }, reloadGapMs);
  }, reload);

  return { data, error, reload };
}
