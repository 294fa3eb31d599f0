import { describe, expect, it } from 'vitest';
import { SpecValidationError, UsageError } from './errors.js';
import {
  buildSpec,
  parseDeadline,
  parseDuration,
  parseEnv,
  parseGpus,
  parseSizeMiB,
  type SpecFlags,
  specFromFlags,
  validateSpec,
} from './spec-flags.js';

const now = Date.parse('2030-01-01T00:00:00.000Z');
const context = { now, env: { HF_TOKEN: 'secret' } };
const build = (flags: SpecFlags, base?: unknown) =>
  specFromFlags(flags, base === undefined ? context : { ...context, base });

describe('parseGpus', () => {
  it('reads a bare count', () => {
    expect(parseGpus('0')).toEqual({ count: 0 });
    expect(parseGpus('2')).toEqual({ count: 2 });
  });

  it("reads SkyPilot's MODEL:COUNT, with models in order of preference", () => {
    expect(parseGpus('H100:8')).toEqual({ count: 8, models: ['H100'] });
    expect(parseGpus('A100,H100:2')).toEqual({ count: 2, models: ['A100', 'H100'] });
    expect(parseGpus('RTX 4090')).toEqual({ count: 1, models: ['RTX 4090'] });
  });

  it('refuses malformed spellings, naming the flag and the accepted forms', () => {
    for (const bad of ['H100:', 'H100:x', ':2', 'A100,,H100:2', '-1']) {
      expect(() => parseGpus(bad)).toThrow(/--gpus expects N, MODEL:N/);
    }
    expect(() => parseGpus('H100:0')).toThrow(/asks for 0 GPUs/);
  });
});

describe('parseDuration', () => {
  it('reads units, compounds and bare seconds', () => {
    expect(parseDuration('90s')).toBe(90_000);
    expect(parseDuration('30m')).toBe(1_800_000);
    expect(parseDuration('2h')).toBe(7_200_000);
    expect(parseDuration('1h30m')).toBe(5_400_000);
    expect(parseDuration('500ms')).toBe(500);
    expect(parseDuration('1d')).toBe(86_400_000);
    expect(parseDuration('1.5h')).toBe(5_400_000);
    expect(parseDuration('45')).toBe(45_000);
  });

  it('returns undefined for anything else', () => {
    for (const bad of ['', 'h', '2 hours', '1w', '-5s', '2h-']) expect(parseDuration(bad)).toBeUndefined();
  });
});

describe('parseSizeMiB', () => {
  it('reads binary units exactly, decimal ones as vendors mean them, bare numbers as MiB', () => {
    expect(parseSizeMiB('--min-vram', '40GiB')).toBe(40_960);
    expect(parseSizeMiB('--min-vram', '40960')).toBe(40_960);
    expect(parseSizeMiB('--min-vram', '512MiB')).toBe(512);
    expect(parseSizeMiB('--min-vram', '1.5gib')).toBe(1536);
    // An "80GB" H100 reports 81559 MiB: the decimal reading must not exceed it.
    expect(parseSizeMiB('--min-vram', '80GB')).toBe(76_293);
    expect(parseSizeMiB('--min-vram', '1TiB')).toBe(1_048_576);
  });

  it('refuses unknown units', () => {
    expect(() => parseSizeMiB('--min-vram', '40G')).toThrow(
      '--min-vram expects a size like 40GiB, 80GB or 40960 (MiB), got "40G"',
    );
    expect(() => parseSizeMiB('--min-vram', 'lots')).toThrow(UsageError);
  });
});

describe('parseEnv', () => {
  it('splits at the first =, and passes NAME alone through from the shell', () => {
    expect(parseEnv(['A=1', 'B=x=y', 'EMPTY=', 'HF_TOKEN'], { HF_TOKEN: 'secret' })).toEqual({
      A: '1',
      B: 'x=y',
      EMPTY: '',
      HF_TOKEN: 'secret',
    });
  });

  it('refuses a missing name or an unset variable', () => {
    expect(() => parseEnv(['=1'], {})).toThrow('--env expects NAME=value or NAME, got "=1"');
    expect(() => parseEnv(['MISSING'], {})).toThrow(
      '--env MISSING: no value given and MISSING is not set in this shell',
    );
  });
});

describe('parseDeadline', () => {
  it('takes an ISO time or a duration from now', () => {
    expect(parseDeadline('2h', now)).toBe('2030-01-01T02:00:00.000Z');
    expect(parseDeadline('2030-06-01T12:00:00+02:00', now)).toBe('2030-06-01T10:00:00.000Z');
  });

  it('refuses garbage and the past', () => {
    expect(() => parseDeadline('tomorrow', now)).toThrow(/--deadline expects an ISO time/);
    expect(() => parseDeadline('2029-01-01T00:00:00Z', now)).toThrow('--deadline 2029-01-01T00:00:00Z is in the past');
  });
});

describe('specFromFlags', () => {
  it('wraps --command in sh -c and takes the argv after -- verbatim', () => {
    expect(build({ command: 'echo hello' }).command).toEqual(['sh', '-c', 'echo hello']);
    expect(build({ argv: ['python', 'train.py', '--lr', '3e-4'] }).command).toEqual([
      'python',
      'train.py',
      '--lr',
      '3e-4',
    ]);
  });

  it('maps every flag onto its field', () => {
    expect(
      build({
        argv: ['python', 'train.py'],
        image: 'pytorch/pytorch:2.4',
        env: ['A=1', 'HF_TOKEN'],
        gpus: 'A100,H100:2',
        vendor: 'NVIDIA',
        minVram: '40GiB',
        tasks: '4',
        retries: '0',
        timeout: '30m',
        deadline: '2h',
        maxPrice: '1.5',
        workload: 'training',
        region: ['eu-west,us-east', 'ap-south'],
        name: 'resnet',
        verifyHash: 'AB'.repeat(32),
      }),
    ).toEqual({
      command: ['python', 'train.py'],
      image: 'pytorch/pytorch:2.4',
      env: { A: '1', HF_TOKEN: 'secret' },
      resources: { gpus: { count: 2, models: ['A100', 'H100'], vendor: 'nvidia', minVramMiB: 40_960 } },
      tasks: 4,
      retries: 0,
      timeoutSeconds: 1800,
      deadline: '2030-01-01T02:00:00.000Z',
      maxPricePerGpuHour: '1.5',
      workload: 'training',
      regions: ['eu-west', 'us-east', 'ap-south'],
      name: 'resnet',
      verification: { mode: 'expected-hash', sha256: 'ab'.repeat(32) },
    });
  });

  it('lets flags override the --file fields, merging env and the GPU sub-fields', () => {
    const file = {
      name: 'from-file',
      command: ['./run.sh'],
      env: { A: 'file', B: 'file' },
      tasks: 2,
      resources: { cpuCores: 8, gpus: { count: 1, models: ['L4'], minVramMiB: 20_000 } },
    };
    expect(build({ tasks: '16', env: ['B=flag'], gpus: '4', vendor: 'nvidia' }, file)).toEqual({
      name: 'from-file',
      command: ['./run.sh'],
      env: { A: 'file', B: 'flag' },
      tasks: 16,
      resources: { cpuCores: 8, gpus: { count: 4, models: ['L4'], minVramMiB: 20_000, vendor: 'nvidia' } },
    });
    expect(build({ command: 'echo hi' }, file).command).toEqual(['sh', '-c', 'echo hi']);
  });

  it('refuses conflicting or missing commands and unreadable numbers', () => {
    expect(() => build({ command: 'x', argv: ['y'] })).toThrow(
      'give the command either with --command or after --, not both',
    );
    expect(() => build({})).toThrow(/nothing to run/);
    expect(() => build({ command: 'x', tasks: 'four' })).toThrow('--tasks expects a whole number, got "four"');
    expect(() => build({ command: 'x', timeout: '1.5s' })).toThrow('--timeout is whole seconds, got "1.5s"');
    expect(() => build({ command: 'x', timeout: 'soon' })).toThrow(/--timeout expects a duration/);
    expect(() => build({ command: 'x' }, ['not', 'an', 'object'])).toThrow(
      '--file must contain a JSON object (a JobSpec)',
    );
  });
});

describe('validateSpec', () => {
  const rejection = (input: unknown): SpecValidationError => {
    try {
      validateSpec(input);
    } catch (error) {
      if (error instanceof SpecValidationError) return error;
      throw error;
    }
    throw new Error('expected the spec to be invalid');
  };

  it('applies the protocol defaults', () => {
    expect(buildSpec({ command: 'echo hi' }, context)).toEqual({
      command: ['sh', '-c', 'echo hi'],
      env: {},
      resources: { gpus: { count: 0 } },
      workload: 'batch',
      tasks: 1,
      retries: 2,
      timeoutSeconds: 3600,
      verification: { mode: 'none' },
    });
  });

  it('reports schema issues with the path and the flag that sets it', () => {
    const { issues } = rejection(build({ command: 'x', tasks: '65', gpus: '65', vendor: 'ibm', region: ['EU West'] }));
    expect(issues.map((issue) => [issue.path, issue.flag])).toEqual([
      ['resources.gpus.count', '--gpus'],
      ['resources.gpus.vendor', '--vendor'],
      ['tasks', '--tasks'],
      ['regions.0', '--region'],
    ]);
    expect(issues.find((issue) => issue.path === 'tasks')?.message).toMatch(/64/);
  });

  it('refuses fields the schema does not know (a typo in a spec file)', () => {
    const { issues } = rejection({ command: ['x'], taks: 3 });
    expect(issues).toHaveLength(1);
    expect(issues[0]?.path).toBe('');
    expect(issues[0]?.message).toContain('taks');
  });

  it('renders issues one per line for people', () => {
    const error = rejection({ command: ['x'], retries: 11, verification: { mode: 'expected-hash', sha256: 'nope' } });
    expect(error.detailLines()).toEqual([
      expect.stringMatching(/^ {2}retries \(--retries\): .*10/),
      expect.stringMatching(/^ {2}verification\.sha256 \(--verify-hash\): /),
    ]);
  });
});
