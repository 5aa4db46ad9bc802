/** Upstreams and nbd:// bases a test file starts, closed and stopped (by pid) after each test. */
import { afterEach } from 'vitest';
import { openNbdBase, type NbdBase, type NbdBaseOptions } from '../../../src/remote/nbd.js';
import type { Upstream } from './upstream.js';

export interface Tracked {
  /** Keeps `up` to be stopped after the test. */
  upstream(up: Upstream): Upstream;
  /** Stops tracking an upstream the test stopped itself. */
  forget(up: Upstream): void;
  /** Opens a base (and waits for all its connections' first attempts) to be closed after the test. */
  open(uri: string, options?: NbdBaseOptions): Promise<NbdBase>;
}

export function trackUpstreams(): Tracked {
  const upstreams = new Set<Upstream>();
  const bases = new Set<NbdBase>();
  afterEach(async () => {
    for (const b of bases) await b.close();
    bases.clear();
    for (const u of upstreams) await u.stop();
    upstreams.clear();
  });
  return {
    upstream: (up) => {
      upstreams.add(up);
      return up;
    },
    forget: (up) => void upstreams.delete(up),
    open: async (uri, options = {}) => {
      const base = await openNbdBase(uri, options);
      bases.add(base);
      await base.connectionsSettled;
      return base;
    },
  };
}
