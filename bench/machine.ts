/**
 * The guest kernel's idle and paging settings, read for the report's `machine.tuning`.
 *
 * On a virtual machine these can move a small request's latency by more than the serving
 * layer adds: a vCPU with nothing to run halts, the host deschedules it, and waking it for
 * the next packet goes through the host, three times per gRPC call (the server once, the
 * client twice: bench/README.md "Hot path"). Under the `haltpoll` cpuidle governor an idle
 * vCPU polls for a while before it halts. Two runs whose settings differ here are not
 * comparable, so the report records what the kernel says and the Markdown summary prints it.
 *
 * Every file is optional and every value is checked. A missing, unreadable, oversized or
 * odd file, or anything but a regular file, gives null, never an exception or a wait, so a
 * report is written on any Linux, container or not, and on other platforms (all null).
 */
import { closeSync, constants, fstatSync, openSync, readSync } from 'node:fs';
import path from 'node:path';

export interface MachineTuning {
  /** `/proc/cpuinfo`'s first `flags` line lists `hypervisor`: a virtual machine guest. Null if unreadable or without a `flags` line (arm64 calls it `Features`). */
  readonly hypervisor: boolean | null;
  /** `/sys/devices/system/cpu/cpuidle/current_driver`, e.g. `haltpoll`, `intel_idle`, `acpi_idle`. */
  readonly cpuidleDriver: string | null;
  /** `/sys/devices/system/cpu/cpuidle/current_governor_ro` (or `current_governor`), e.g. `menu`, `haltpoll`. */
  readonly cpuidleGovernor: string | null;
  /**
   * The `haltpoll` governor's parameters (`/sys/module/haltpoll/parameters/`), null unless
   * that governor is the one in use: any kernel built for KVM guests has the files, but
   * only that governor acts on them. Each vCPU's poll window starts at 0. A wake-up that
   * comes after the window but within `maxNs` grows it (0 to `growStartNs`, then by
   * `guest_halt_poll_grow`), up to `maxNs`; one that comes after `maxNs` shrinks it, unless
   * `allowShrink` is false.
   */
  readonly haltPoll: {
    /** `guest_halt_poll_ns`: the longest an idle vCPU polls before it halts; 0 = never polls. */
    readonly maxNs: number | null;
    /** `guest_halt_poll_grow_start`. */
    readonly growStartNs: number | null;
    /** `guest_halt_poll_allow_shrink` (`Y`/`N`). */
    readonly allowShrink: boolean | null;
  } | null;
  /** `/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor`, e.g. `performance`; null without cpufreq (usual in a VM). */
  readonly cpufreqGovernor: string | null;
  /** The selected value of `/sys/kernel/mm/transparent_hugepage/enabled`: `always`, `madvise` or `never`. */
  readonly transparentHugePages: 'always' | 'madvise' | 'never' | null;
}

/** Larger than any of these sysfs files; of /proc/cpuinfo, enough to hold the first processor's `flags` line. */
const MAX_FILE_BYTES = 64 * 1024;
/** A value is a short token of printable ASCII, as the kernel writes these files. */
const TOKEN = /^[A-Za-z0-9_.:+-]{1,64}$/;
const THP_MODES = ['always', 'madvise', 'never'] as const;

/**
 * A regular file's text (latin1), or null if it cannot be read, is not a regular file, or
 * (unless `head`) is longer than `MAX_FILE_BYTES`. With `head`, the first `MAX_FILE_BYTES`.
 * Opened non-blocking, so a FIFO in its place cannot stall the process. Never throws.
 */
function readText(file: string, head = false): string | null {
  let fd: number | undefined;
  try {
    fd = openSync(file, constants.O_RDONLY | constants.O_NONBLOCK);
    if (!fstatSync(fd).isFile()) return null;
    // One byte more than the limit tells a file of exactly MAX_FILE_BYTES from a longer one.
    const buf = Buffer.alloc(MAX_FILE_BYTES + 1);
    let n = 0;
    for (;;) {
      const got = readSync(fd, buf, n, buf.length - n, null);
      if (got === 0 || (n += got) === buf.length) break;
    }
    if (n > MAX_FILE_BYTES) {
      if (!head) return null;
      n = MAX_FILE_BYTES;
    }
    return buf.toString('latin1', 0, n);
  } catch {
    return null;
  } finally {
    if (fd !== undefined) {
      try {
        closeSync(fd);
      } catch {
        // nothing to do: the value is already read or null
      }
    }
  }
}

/** A one-token sysfs value (one trailing newline allowed), or null. */
function token(text: string | null): string | null {
  if (text === null) return null;
  const v = text.replace(/\n$/, '');
  return TOKEN.test(v) ? v : null;
}

/** A non-negative decimal integer within the safe range, or null. */
function count(text: string | null): number | null {
  const v = token(text);
  if (v === null || !/^\d{1,15}$/.test(v)) return null;
  return Number(v);
}

/** A kernel boolean parameter (`Y` or `N`), or null. */
function yesNo(text: string | null): boolean | null {
  const v = token(text);
  return v === 'Y' ? true : v === 'N' ? false : null;
}

/** `always [madvise] never` → `madvise`: words separated by single spaces, exactly one of them bracketed; else null. */
export function selectedChoice(text: string | null): string | null {
  if (text === null) return null;
  const words = text.replace(/\n$/, '').split(' ');
  const picked = words.filter((w) => /^\[[^\]]*\]$/.test(w)).map((w) => w.slice(1, -1));
  if (picked.length !== 1 || !words.every((w) => TOKEN.test(w.replace(/^\[(.*)\]$/, '$1')))) return null;
  return picked[0]!;
}

function thpMode(text: string | null): MachineTuning['transparentHugePages'] {
  const v = selectedChoice(text);
  return THP_MODES.find((m) => m === v) ?? null;
}

/**
 * Whether the first `flags` line of /proc/cpuinfo lists `hypervisor` as a whole word (all
 * processors of a guest share it). Null without a complete `flags` line in the text: none
 * at all, or one cut off by the read limit before its newline.
 */
export function hypervisorFlag(cpuinfo: string | null): boolean | null {
  if (cpuinfo === null) return null;
  const line = /^flags[ \t]*:([^\n]*)\n/m.exec(cpuinfo);
  if (!line) return null;
  return line[1]!.trim().split(/[ \t]+/).includes('hypervisor');
}

/** Reads the settings under `root` (`/` on a live machine; a directory tree in tests). */
export function readMachineTuning(root = '/'): MachineTuning {
  const at = (p: string): string | null => readText(path.join(root, p));
  const cpuidle = 'sys/devices/system/cpu/cpuidle';
  const hp = 'sys/module/haltpoll/parameters';
  // current_governor_ro where the kernel has it (an odd value there is not replaced by the other file's).
  const cpuidleGovernor = token(at(`${cpuidle}/current_governor_ro`) ?? at(`${cpuidle}/current_governor`));
  return {
    hypervisor: hypervisorFlag(readText(path.join(root, 'proc/cpuinfo'), true)),
    cpuidleDriver: token(at(`${cpuidle}/current_driver`)),
    cpuidleGovernor,
    haltPoll:
      cpuidleGovernor === 'haltpoll'
        ? {
            maxNs: count(at(`${hp}/guest_halt_poll_ns`)),
            growStartNs: count(at(`${hp}/guest_halt_poll_grow_start`)),
            allowShrink: yesNo(at(`${hp}/guest_halt_poll_allow_shrink`)),
          }
        : null,
    cpufreqGovernor: token(at('sys/devices/system/cpu/cpu0/cpufreq/scaling_governor')),
    transparentHugePages: thpMode(at('sys/kernel/mm/transparent_hugepage/enabled')),
  };
}

/** One line for the Markdown summary: `–` for what the kernel did not say. */
export function tuningLine(t: MachineTuning): string {
  const v = (x: string | number | boolean | null): string => (x === null ? '–' : x === true ? 'yes' : x === false ? 'no' : String(x));
  const hp = t.haltPoll;
  const poll = hp
    ? `halt-poll max ${v(hp.maxNs)} ns, grow start ${v(hp.growStartNs)} ns, shrink ${v(hp.allowShrink)}`
    : t.cpuidleGovernor === null
      ? 'halt-poll –'
      : 'no halt-polling';
  return `Kernel: VM guest ${v(t.hypervisor)} · cpuidle ${v(t.cpuidleDriver)}/${v(t.cpuidleGovernor)} · ${poll} · cpufreq ${v(t.cpufreqGovernor)} · THP ${v(t.transparentHugePages)}`;
}
