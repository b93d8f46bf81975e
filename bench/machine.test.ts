import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import fc from 'fast-check';
import { afterEach, describe, expect, it } from 'vitest';
import { hypervisorFlag, readMachineTuning, selectedChoice, tuningLine } from './machine.js';

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

/** A directory tree standing in for `/`, with the given files (relative paths) written into it. */
function fakeRoot(files: Record<string, string | Buffer>): string {
  const root = mkdtempSync(path.join(os.tmpdir(), 'cir-machine-'));
  dirs.push(root);
  for (const [rel, body] of Object.entries(files)) {
    mkdirSync(path.dirname(path.join(root, rel)), { recursive: true });
    writeFileSync(path.join(root, rel), body);
  }
  return root;
}

// The layout a KVM guest with the haltpoll cpuidle driver shows (values as the kernel writes them).
const KVM_GUEST = {
  'proc/cpuinfo':
    'processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Processor\n' +
    'flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep hypervisor lahf_lm abm\n\n' +
    'processor\t: 1\nflags\t\t: fpu vme hypervisor\n',
  'sys/devices/system/cpu/cpuidle/current_driver': 'haltpoll\n',
  'sys/devices/system/cpu/cpuidle/current_governor_ro': 'haltpoll\n',
  'sys/devices/system/cpu/cpuidle/current_governor': 'menu\n',
  'sys/module/haltpoll/parameters/guest_halt_poll_ns': '200000\n',
  'sys/module/haltpoll/parameters/guest_halt_poll_allow_shrink': 'Y\n',
  'sys/kernel/mm/transparent_hugepage/enabled': 'always [madvise] never\n',
};

describe('readMachineTuning', () => {
  it('reads a KVM guest with halt-polling', () => {
    const t = readMachineTuning(fakeRoot(KVM_GUEST));
    expect(t).toEqual({
      hypervisor: true,
      cpuidleDriver: 'haltpoll',
      cpuidleGovernor: 'haltpoll',
      haltPollNs: 200_000,
      haltPollAllowShrink: true,
      cpufreqGovernor: null,
      transparentHugePages: 'madvise',
    });
    expect(tuningLine(t)).toBe('Kernel: VM guest yes · cpuidle haltpoll/haltpoll · halt-poll 200000 ns · cpufreq – · THP madvise');
    // A window that may not shrink is marked: it polls the full time on every idle entry.
    expect(tuningLine({ ...t, haltPollAllowShrink: false })).toContain('halt-poll 200000 ns (fixed) ·');
  });

  it('reads bare metal: no hypervisor flag, a cpufreq governor, the writable governor file only', () => {
    const t = readMachineTuning(
      fakeRoot({
        'proc/cpuinfo': 'processor\t: 0\nflags\t\t: fpu vme de pse tsc msr\n',
        'sys/devices/system/cpu/cpuidle/current_driver': 'intel_idle\n',
        'sys/devices/system/cpu/cpuidle/current_governor': 'menu\n',
        'sys/devices/system/cpu/cpu0/cpufreq/scaling_governor': 'performance\n',
        'sys/kernel/mm/transparent_hugepage/enabled': '[always] madvise never\n',
      }),
    );
    expect(t).toEqual({
      hypervisor: false,
      cpuidleDriver: 'intel_idle',
      cpuidleGovernor: 'menu',
      haltPollNs: null,
      haltPollAllowShrink: null,
      cpufreqGovernor: 'performance',
      transparentHugePages: 'always',
    });
  });

  it('gives null for everything on a tree without these files, and says so in the summary line', () => {
    const t = readMachineTuning(fakeRoot({}));
    expect(Object.values(t).every((v) => v === null)).toBe(true);
    expect(tuningLine(t)).toBe('Kernel: VM guest – · cpuidle –/– · halt-poll – · cpufreq – · THP –');
  });

  it('refuses odd values: binary, spaces, overlong, negative or fractional counts, a directory in place of a file', () => {
    const root = fakeRoot({
      'proc/cpuinfo': 'processor\t: 0\nmodel name\t: x\n',
      'sys/devices/system/cpu/cpuidle/current_driver': Buffer.from([0x68, 0x00, 0xff, 0x0a]),
      'sys/devices/system/cpu/cpuidle/current_governor': 'two words\n',
      'sys/module/haltpoll/parameters/guest_halt_poll_ns': '-5\n',
      'sys/module/haltpoll/parameters/guest_halt_poll_allow_shrink': 'yes\n',
      'sys/devices/system/cpu/cpu0/cpufreq/scaling_governor': `${'a'.repeat(65)}\n`,
      'sys/kernel/mm/transparent_hugepage/enabled': '[always] [madvise] never\n',
    });
    expect(readMachineTuning(root)).toEqual({
      hypervisor: null,
      cpuidleDriver: null,
      cpuidleGovernor: null,
      haltPollNs: null,
      haltPollAllowShrink: null,
      cpufreqGovernor: null,
      transparentHugePages: null,
    });
    for (const bad of ['1.5\n', '1e9\n', '9999999999999999\n', '0x10\n', ' 5\n']) {
      writeFileSync(path.join(root, 'sys/module/haltpoll/parameters/guest_halt_poll_ns'), bad);
      expect(readMachineTuning(root).haltPollNs, bad).toBeNull();
    }
    rmSync(path.join(root, 'sys/devices/system/cpu/cpuidle/current_driver'));
    mkdirSync(path.join(root, 'sys/devices/system/cpu/cpuidle/current_driver'));
    expect(readMachineTuning(root).cpuidleDriver).toBeNull();
  });

  it('reads a cpuinfo larger than its read limit as far as the first flags line', () => {
    const big = KVM_GUEST['proc/cpuinfo'] + 'x'.repeat(200 * 1024);
    expect(readMachineTuning(fakeRoot({ 'proc/cpuinfo': big })).hypervisor).toBe(true);
    // A flags line beyond the first 64 KiB is not read: null, not a guess.
    const late = `processor\t: 0\n${'model name\t: x\n'.repeat(5000)}flags\t\t: hypervisor\n`;
    expect(readMachineTuning(fakeRoot({ 'proc/cpuinfo': late })).hypervisor).toBeNull();
  });

  it('matches this machine when run on Linux (the live reading is what the report holds)', () => {
    const t = readMachineTuning();
    if (process.platform !== 'linux') {
      expect(Object.values(t).every((v) => v === null)).toBe(true);
      return;
    }
    // x86 Linux lists CPU flags on a `flags` line; arm64 calls it `Features`, and null is the honest answer there.
    if (process.arch === 'x64') expect(typeof t.hypervisor).toBe('boolean');
    if (t.haltPollNs !== null) expect(Number.isSafeInteger(t.haltPollNs) && t.haltPollNs >= 0).toBe(true);
  });
});

describe('hypervisorFlag', () => {
  it('wants the whole word on the first flags line, not a part of a flag or the word elsewhere', () => {
    expect(hypervisorFlag('flags\t\t: fpu hypervisor\n')).toBe(true);
    expect(hypervisorFlag('flags\t\t: fpu xhypervisor hypervisor_lite\n')).toBe(false);
    expect(hypervisorFlag('model name\t: hypervisor edition\nflags\t\t: fpu vme\n')).toBe(false);
    expect(hypervisorFlag('flags\t\t: fpu vme\nflags\t\t: hypervisor\n')).toBe(false);
    expect(hypervisorFlag('model name\t: hypervisor\n')).toBeNull();
  });
});

describe('the parsers on arbitrary input', () => {
  it('selectedChoice returns null or one of the bracketed words, never throws', () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 80 }), (s) => {
        const v = selectedChoice(s);
        if (v !== null) {
          expect(s).toContain(`[${v}]`);
          expect(v).toMatch(/^[A-Za-z0-9_.:+-]{1,64}$/);
        }
      }),
    );
  });

  it('hypervisorFlag returns null, true only with the word present, never throws', () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 200 }), fc.boolean(), (s, withFlags) => {
        const text = withFlags ? `flags\t: ${s}\n` : s;
        const v = hypervisorFlag(text);
        if (v === true) expect(text).toContain('hypervisor');
        if (!/^flags\s*:/m.test(text)) expect(v).toBeNull();
      }),
    );
  });

  it('readMachineTuning gives a well-formed result for any bytes in any of its files', () => {
    const root = fakeRoot(KVM_GUEST);
    const files = Object.keys(KVM_GUEST);
    fc.assert(
      fc.property(fc.constantFrom(...files), fc.uint8Array({ maxLength: 300 }), (rel, bytes) => {
        writeFileSync(path.join(root, rel), bytes);
        const t = readMachineTuning(root);
        for (const v of [t.cpuidleDriver, t.cpuidleGovernor, t.cpufreqGovernor, t.transparentHugePages]) {
          if (v !== null) expect(v).toMatch(/^[A-Za-z0-9_.:+-]{1,64}$/);
        }
        if (t.haltPollNs !== null) expect(Number.isSafeInteger(t.haltPollNs) && t.haltPollNs >= 0).toBe(true);
        expect([true, false, null]).toContain(t.hypervisor);
        expect([true, false, null]).toContain(t.haltPollAllowShrink);
        writeFileSync(path.join(root, rel), KVM_GUEST[rel as keyof typeof KVM_GUEST]);
      }),
      { numRuns: 200 },
    );
  });
});
