/**
 * Idle polling (`idlePollUs` in the server config): after the last call in flight ends,
 * keep the event loop turning for up to that many microseconds before it may sleep, so a
 * request that arrives in that window is read at once.
 *
 * Why. An idle Node event loop blocks in epoll_wait, and its thread sleeps. The next
 * request must wake it, and on a VM the vCPU under it has halted too: waking it goes
 * through the host, and on a confidential VM each exit to the host and back costs more
 * than on a plain one. At concurrency 1 every request pays that. While a `setImmediate` is
 * pending, libuv polls with a zero timeout instead, so the thread never sleeps and the
 * request is read as soon as it lands. This is the process-level form of the guest
 * kernel's halt-polling (`guest_halt_poll_ns`) and of onnxruntime's thread-pool spinning,
 * and it has their price: the thread spins for up to the window after every call that
 * leaves the server idle, CPU time nothing else on that core can use. Under load the loop rarely goes idle and the
 * window costs nothing; at a low request rate it costs up to the window per call.
 * Figures: bench/README.md "Hot path", Idle polling: on the 2-core bench VM it took
 * 0.1-0.3 ms off most small calls made one at a time and slowed a 12 ms model by ~0.2 ms.
 *
 * Off (0) by default. Polling stops at the next turn once a call is in flight (a model
 * running on the event loop blocks it anyway, and with the worker executor spinning would
 * take a core from the model), when the window has passed, or on stop(). The immediates
 * are ref'd, as they must be (libuv only polls without blocking for ref'd ones), so the
 * chain keeps the process alive for at most one window.
 */

/** Upper bound of `idlePollUs` (server/config.ts): longer windows only burn CPU. */
export const MAX_IDLE_POLL_US = 5000;

export interface IdlePoller {
  /** Wraps a handler so that its calls count as in flight (identity when polling is off). */
  track<A, R>(fn: (arg: A) => Promise<R>): (arg: A) => Promise<R>;
  /** Whether the poll chain is scheduled now. */
  readonly polling: boolean;
  /** Stops polling for good (server shutdown). */
  stop(): void;
}

export interface IdlePollDeps {
  /** Milliseconds, monotonic; default performance.now. */
  readonly now?: () => number;
  /** Schedules one turn; default setImmediate (ref'd). */
  readonly schedule?: (turn: () => void) => void;
}

const OFF: IdlePoller = Object.freeze({
  track: <A, R>(fn: (arg: A) => Promise<R>) => fn,
  polling: false,
  stop() {},
});

/** A poller for `windowUs` microseconds (0: off, and `track` returns the handler as is). */
export function createIdlePoller(windowUs: number, deps: IdlePollDeps = {}): IdlePoller {
  if (!Number.isInteger(windowUs) || windowUs < 0 || windowUs > MAX_IDLE_POLL_US) {
    throw new RangeError(`idlePollUs must be an integer from 0 to ${MAX_IDLE_POLL_US}`);
  }
  if (windowUs === 0) return OFF;
  const now = deps.now ?? (() => performance.now());
  const schedule = deps.schedule ?? ((turn: () => void) => void setImmediate(turn));
  const windowMs = windowUs / 1000;
  let inFlight = 0;
  let until = 0;
  let polling = false;
  let stopped = false;

  const turn = (): void => {
    if (stopped || inFlight > 0 || now() >= until) {
      polling = false;
      return;
    }
    schedule(turn);
  };
  const leave = (): void => {
    inFlight--;
    if (inFlight > 0 || stopped) return;
    until = now() + windowMs;
    if (!polling) {
      polling = true;
      schedule(turn);
    }
  };
  return {
    track<A, R>(fn: (arg: A) => Promise<R>) {
      return async (arg: A) => {
        inFlight++;
        try {
          return await fn(arg);
        } finally {
          leave();
        }
      };
    },
    get polling() {
      return polling;
    },
    stop() {
      stopped = true;
    },
  };
}
