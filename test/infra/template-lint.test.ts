/**
 * The synthesized CloudFormation passes checkov, with every check on, and cfn-lint without an error,
 * for each context that changes which resources the stack declares. A checkov finding that does not
 * apply is skipped in the resource's own metadata with a reason (infra/constructs/checkov.ts); the
 * list of skips is pinned below, so a new one is a decision a reviewer sees.
 *
 * Both tools come from PyPI into .tools/iac-venv through test/infra/install-iac-lint.sh, which
 * installs nothing when they are there already. checkov runs offline: `--skip-download` and
 * `BC_SKIP_MAPPING=TRUE` keep it from fetching guidelines and mappings from Bridgecrew's API.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { App } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readContext } from '../../infra/context.js';
import { GpuaiStack } from '../../infra/gpuai-stack.js';

const root = fileURLToPath(new URL('../../', import.meta.url));
const installScript = join(root, 'test/infra/install-iac-lint.sh');
const venvBin = join(root, '.tools/iac-venv/bin');

/**
 * The contexts whose templates are linted: the default (SQS dispatch, data retained), and each
 * option that adds, removes or reshapes resources.
 */
const contexts: Record<string, Record<string, unknown>> = {
  default: {},
  // No NodeWorkReader role or pool-queue grants; tables, keys and logs disposable.
  'long-poll-dev': { 'gpuai:dispatch': 'long-poll', 'gpuai:retainData': 'false' },
  // A JWT authorizer and one route per application path; an email subscription on the alarm topic.
  oidc: {
    'gpuai:oidcIssuer': 'https://login.example.com/realms/gpuai',
    'gpuai:oidcAudience': 'gpuai-api',
    'gpuai:oidcTenantClaim': 'tenant',
    'gpuai:alarmEmail': 'ops@example.com',
  },
};

/** The checkov findings skipped in resource metadata: check id -> the logical ids skipping it. */
const functions = ['WorkersApi', 'WorkersReaper', 'WorkersScheduler', 'WorkersVerifier'];
const expectedSkips = {
  // Lambda dead-letter queue: only asynchronous invocations reach one (the reason per function).
  CKV_AWS_116: functions,
  // Lambda inside a VPC.
  CKV_AWS_117: functions,
  // Lambda environment encrypted with a customer managed key: it holds no secret.
  CKV_AWS_173: functions,
};

const cdkContext = JSON.parse(readFileSync(new URL('../../cdk.json', import.meta.url), 'utf8')).context as Record<
  string,
  unknown
>;

/** The stack's template under a context, as stack.test.ts synthesizes it (no asset bundling). */
function synthesize(context: Record<string, unknown>): Record<string, unknown> {
  const app = new App({ context: { ...cdkContext, ...context, 'aws:cdk:bundling-stacks': [] } });
  const { stackName, settings } = readContext(app.node);
  return Template.fromStack(new GpuaiStack(app, stackName, { settings })).toJSON();
}

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
  seconds: number;
}

function run(command: string, args: string[], env: NodeJS.ProcessEnv = {}, onStderr?: (chunk: string) => void) {
  return new Promise<Run>((resolve, reject) => {
    const started = performance.now();
    const child = spawn(command, args, { cwd: root, env: { ...process.env, ...env } });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
      stdout += chunk;
    });
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
      stderr += chunk;
      onStderr?.(chunk);
    });
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr, seconds: (performance.now() - started) / 1000 }));
  });
}

interface CheckovCheck {
  check_id: string;
  check_name: string;
  resource: string;
  file_path: string;
  check_result: { result: 'PASSED' | 'FAILED' | 'SKIPPED'; suppress_comment?: string };
  guideline?: string;
}
interface CheckovReport {
  check_type: string;
  summary: { passed: number; failed: number; skipped: number; parsing_errors: number; resource_count: number };
  results: {
    passed_checks: CheckovCheck[];
    failed_checks: CheckovCheck[];
    skipped_checks: CheckovCheck[];
    parsing_errors?: string[];
  };
}
interface CfnLintMatch {
  Level: 'Error' | 'Warning' | 'Informational';
  Rule: { Id: string };
  Message: string;
  Filename: string;
  Location: { Path: (string | number)[] };
}

const dir = mkdtempSync(join(tmpdir(), 'gpuai-template-lint-'));
const files = Object.keys(contexts).map((name) => join(dir, `${name}.template.json`));
/**
 * A control linted in the same runs: one queue without encryption and with a misspelt property,
 * which each tool must flag, so a run that checks nothing (no checks loaded, a file not read)
 * cannot pass for a clean one.
 */
const control = join(dir, 'control.template.json');
const controlTemplate = {
  AWSTemplateFormatVersion: '2010-09-09',
  Resources: { Plain: { Type: 'AWS::SQS::Queue', Properties: { VisibilityTimout: 30 } } },
};
const isControl = (path: string) => path.endsWith('control.template.json');
let checkov: { reports: CheckovReport[]; run: Run };
let cfnLint: { matches: CfnLintMatch[]; run: Run };

beforeAll(async () => {
  if ((await run('bash', [installScript, '--check'])).code !== 0) {
    // A first install takes minutes (pip resolves checkov's dependencies): show it as it goes.
    const install = await run('bash', [installScript], {}, (chunk) => process.stderr.write(chunk));
    if (install.code !== 0) throw new Error(`${installScript} failed:\n${install.stdout}${install.stderr}`);
  }
  for (const [name, context] of Object.entries(contexts)) {
    writeFileSync(join(dir, `${name}.template.json`), JSON.stringify(synthesize(context), null, 1));
  }
  writeFileSync(control, JSON.stringify(controlTemplate));
  // The two tools run at once: each is mostly Python start-up and parsing, on one core.
  const [checkovRun, cfnLintRun] = await Promise.all([
    run(join(venvBin, 'checkov'), ['--directory', dir, '--skip-download', '--output', 'json', '--compact'], {
      BC_SKIP_MAPPING: 'TRUE',
    }),
    run(join(venvBin, 'cfn-lint'), ['--format', 'json', '--', ...files, control]),
  ]);
  // checkov exits 1 when a check fails: the report says which, below.
  if (checkovRun.code !== 0 && checkovRun.code !== 1) {
    throw new Error(`checkov exited with ${checkovRun.code}:\n${checkovRun.stderr}`);
  }
  const parsed = JSON.parse(checkovRun.stdout) as CheckovReport | CheckovReport[];
  checkov = { reports: Array.isArray(parsed) ? parsed : [parsed], run: checkovRun };
  // cfn-lint's exit code is a bit mask: 2 errors, 4 warnings, 8 informational; 1 is a crash.
  if (cfnLintRun.code === null || (cfnLintRun.code & 1) === 1 || cfnLintRun.code > 15) {
    throw new Error(`cfn-lint exited with ${cfnLintRun.code}:\n${cfnLintRun.stderr}`);
  }
  cfnLint = { matches: JSON.parse(cfnLintRun.stdout) as CfnLintMatch[], run: cfnLintRun };
  console.info(
    `checkov ${checkovRun.seconds.toFixed(1)} s, cfn-lint ${cfnLintRun.seconds.toFixed(1)} s, for ${files.length} templates`,
  );
}, 900_000);

afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

const where = (check: CheckovCheck) => `${check.file_path} ${check.resource}`;

describe('checkov, every check on', () => {
  it('reads every template as CloudFormation, without a parsing error', () => {
    const cloudformation = checkov.reports.find((report) => report.check_type === 'cloudformation');
    expect(cloudformation, checkov.run.stderr).toBeDefined();
    for (const report of checkov.reports) {
      expect(report.summary.parsing_errors, JSON.stringify(report.results.parsing_errors)).toBe(0);
    }
    const { passed_checks = [], failed_checks = [], skipped_checks = [] } = cloudformation?.results ?? {};
    const linted = new Set([...passed_checks, ...failed_checks, ...skipped_checks].map((check) => check.file_path));
    expect(linted.size).toBe(files.length + 1);
    // Each template has some 60 resources and about 40 checks that apply to them.
    expect(cloudformation?.summary.passed).toBeGreaterThan(100 * files.length);
  });

  it('finds nothing to fix', () => {
    const all = checkov.reports.flatMap((report) => report.results.failed_checks ?? []);
    // The control's unencrypted queue is found: checkov did check.
    expect(all.filter((check) => isControl(check.file_path)).map((check) => check.check_id)).toContain('CKV_AWS_27');
    const failed = all.filter((check) => !isControl(check.file_path));
    expect(failed.map((check) => `${check.check_id} ${check.check_name}: ${where(check)}`)).toEqual([]);
  });

  it('skips only the pinned checks, each with a reason in the resource', () => {
    const skipped = checkov.reports.flatMap((report) => report.results.skipped_checks ?? []);
    for (const check of skipped) {
      expect(check.check_result.suppress_comment?.length ?? 0, `${check.check_id} ${where(check)}`).toBeGreaterThan(40);
    }
    for (const file of files) {
      const inFile = skipped.filter((check) => check.file_path.endsWith(file.slice(dir.length)));
      const byCheck: Record<string, string[]> = {};
      for (const check of inFile) {
        const logicalId =
          check.resource
            .split('.')
            .at(-1)
            ?.replace(/[0-9A-F]{8}$/, '') ?? '';
        byCheck[check.check_id] = [...(byCheck[check.check_id] ?? []), logicalId];
      }
      for (const ids of Object.values(byCheck)) ids.sort();
      expect(byCheck, file).toEqual(expectedSkips);
    }
  });
});

describe('cfn-lint', () => {
  it('reports no error in any template (warnings are printed)', () => {
    const describe = (match: CfnLintMatch) =>
      `${match.Level} ${match.Rule.Id} ${match.Filename.slice(dir.length + 1)} ${match.Location.Path.join('/')}: ${match.Message}`;
    // The control's misspelt property is an error: cfn-lint did check.
    expect(cfnLint.matches.filter((match) => isControl(match.Filename) && match.Level === 'Error')).not.toEqual([]);
    const matches = cfnLint.matches.filter((match) => !isControl(match.Filename));
    const others = matches.filter((match) => match.Level !== 'Error');
    if (others.length > 0) console.warn(`cfn-lint:\n${others.map(describe).join('\n')}`);
    expect(matches.filter((match) => match.Level === 'Error').map(describe)).toEqual([]);
  });
});
