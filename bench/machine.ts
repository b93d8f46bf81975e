/**
 * The guest kernel's idle and paging settings, read for the report's `machine.tuning`.
 *
 * On a virtual machine these move a small request's latency by more than the serving layer
 * does: a vCPU with nothing to run halts, the host deschedules it, and waking it for the
 * next packet costs tens to hundreds of microseconds, twice per gRPC call (bench/README.md
 * "Hot path"). Halt-polling (the `haltpoll` cpuidle driver) keeps an idle vCPU polling for
 * up to `guest_halt_poll_ns` before it halts. Two machines whose reports differ here are not
 * comparable, so the report records what the kernel says, and the Markdown summary prints it.
 *
 * Every file is optional and every value is checked: a missing, unreadable, oversized or
 * odd file gives null, never an exception, so a report is written on any Linux, container
 * or not, and on other platforms (where all of it is null).
 */
import { closeSync, openSync, readSync } from 'node:fs';
import path from 'node:path';

export interface MachineTuning {
  /** `/proc/cpuinfo` lists the `hypervisor` CPU flag: a virtual machine guest. Null if unreadable. */
  readonly hypervisor: boolean | null;
  /** `/sys/devices/system/cpu/cpuidle/current_driver`, e.g. `haltpoll`, `intel_idle`, `acpi_idle`. */
  readonly cpuidleDriver: string | null;
  /** `/sys/devices/system/cpu/cpuidle/current_governor_ro` (or `current_governor`), e.g. `menu`, `haltpoll`. */
  readonly cpuidleGovernor: string | null;
  /** `/sys/module/haltpoll/parameters/guest_halt_poll_ns`: the longest an idle vCPU polls before halting; 0 = never polls. Null without the module. */
  readonly haltPollNs: number | null;
  /** `guest_halt_poll_allow_shrink`: Y lets each vCPU's poll window shrink below the maximum when polls go unused, N keeps it at the maximum. */
  readonly haltPollAllowShrink: boolean | null;
  /** `/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor`, e.g. `performance`; null without cpufreq (usual in a VM). */
  readonly cpufreqGovernor: string | null;
  /** The selected value of `/sys/kernel/mm/transparent_hugepage/enabled`: `always`, `madvise` or `never`. */
  readonly transparentHugePages: string | null;
}

/** Larger than any of these sysfs files; of /proc/cpuinfo, enough to hold the first processor's `flags` line. */
const MAX_FILE_BYTES = 64 * 1024;
/** A value is a short token of printable ASCII, as the kernel writes these files. */
const TOKEN = /^[A-Za-z0-9_.:+-]{1,64}$/;

/** The first `max` bytes of a file as latin1 text, or null if it cannot be read. Never throws. */
function readHead(file: string, max = MAX_FILE_BYTES): string | null {
  let fd: number | undefined;
  try {
    fd = openSync(file, 'r');
    const buf = Buffer.alloc(max);
    let n = 0;
    for (;;) {
      const got = readSync(fd, buf, n, max - n, null);
      if (got === 0 || (n += got) === max) break;
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

/** A one-token sysfs value (trailing newline allowed), or null. */
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

/** `always [madvise] never` → `madvise`: exactly one bracketed token among tokens, else null. */
export function selectedChoice(text: string | null): string | null {
  if (text === null) return null;
  const words = text.replace(/\n$/, '').split(' ');
  const picked = words.filter((w) => /^\[[^\]]*\]$/.test(w)).map((w) => w.slice(1, -1));
  if (picked.length !== 1 || !words.every((w) => TOKEN.test(w.replace(/^\[(.*)\]$/, '$1')))) return null;
  return picked[0]!;
}

/**
 * Whether the `flags` line of /proc/cpuinfo lists `hypervisor`. The first `flags` line
 * decides (all processors of a guest share it); null when there is none in the text read.
 */
export function hypervisorFlag(cpuinfo: string | null): boolean | null {
  if (cpuinfo === null) return null;
  const line = /^flags\s*:(.*)$/m.exec(cpuinfo);
  if (!line) return null;
  return line[1]!.trim().split(/\s+/).includes('hypervisor');
}

/** Reads the settings under `root` (`/` on a live machine; a directory tree in tests). */
export function readMachineTuning(root = '/'): MachineTuning {
  const at = (p: string): string | null => readHead(path.join(root, p));
  const cpuidle = 'sys/devices/system/cpu/cpuidle';
  const haltpoll = 'sys/module/haltpoll/parameters';
  return {
    hypervisor: hypervisorFlag(at('proc/cpuinfo')),
    cpuidleDriver: token(at(`${cpuidle}/current_driver`)),
    cpuidleGovernor: token(at(`${cpuidle}/current_governor_ro`)) ?? token(at(`${cpuidle}/current_governor`)),
    haltPollNs: count(at(`${haltpoll}/guest_halt_poll_ns`)),
    haltPollAllowShrink: yesNo(at(`${haltpoll}/guest_halt_poll_allow_shrink`)),
    cpufreqGovernor: token(at('sys/devices/system/cpu/cpu0/cpufreq/scaling_governor')),
    transparentHugePages: selectedChoice(at('sys/kernel/mm/transparent_hugepage/enabled')),
  };
}

/** One line for the Markdown summary: `–` for what the kernel did not say. */
export function tuningLine(t: MachineTuning): string {
  const v = (x: string | number | null): string => (x === null ? '–' : String(x));
  const vm = t.hypervisor === null ? '–' : t.hypervisor ? 'yes' : 'no';
  return `Kernel: VM guest ${vm} · cpuidle ${v(t.cpuidleDriver)}/${v(t.cpuidleGovernor)} · halt-poll ${t.haltPollNs === null ? '–' : `${t.haltPollNs} ns`}${t.haltPollAllowShrink === false ? ' (fixed)' : ''} · cpufreq ${v(t.cpufreqGovernor)} · THP ${v(t.transparentHugePages)}`;
}
