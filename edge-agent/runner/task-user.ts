import { readFileSync } from 'node:fs';
import { userInfo } from 'node:os';
import { ConfigError } from '../errors.js';

/** The user a task's process runs as, when it is not the agent's own. */
export interface TaskUser {
  uid: number;
  gid: number;
  /** For logs and messages: the passwd name, or the uid when it has none. */
  name: string;
}

/** What the process runtime will run tasks as, and what the agent should say about it at start. */
export interface TaskUserChoice {
  /** Undefined: tasks run as the agent's own user (it is not root and cannot switch). */
  user: TaskUser | undefined;
  /** Printed once at start when tasks run as the agent's own user. */
  warning?: string;
}

/** Used when /etc/passwd has no `nobody`: the conventional overflow uid and gid. */
const nobodyFallback: TaskUser = { uid: 65534, gid: 65534, name: 'nobody' };

interface PasswdEntry {
  name: string;
  uid: number;
  gid: number;
}

/** Parses /etc/passwd text into its entries, skipping lines that are not `name:x:uid:gid:...`. */
export function parsePasswd(text: string): PasswdEntry[] {
  const entries: PasswdEntry[] = [];
  for (const line of text.split('\n')) {
    const [name, , uid, gid] = line.split(':');
    if (name === undefined || !/^\d+$/.test(uid ?? '') || !/^\d+$/.test(gid ?? '')) continue;
    entries.push({ name, uid: Number(uid), gid: Number(gid) });
  }
  return entries;
}

function readPasswd(): string {
  try {
    return readFileSync('/etc/passwd', 'utf8');
  } catch {
    return '';
  }
}

export interface ResolveTaskUserOptions {
  /** The agent's uid (default `process.getuid()`); undefined where the OS has none (Windows). */
  agentUid?: number | undefined;
  /** The agent's user name, for the warning (default: os.userInfo()). */
  agentUser?: string;
  /** /etc/passwd's text (default: read it). */
  passwd?: string;
}

/**
 * Decides which user the process runtime runs tasks as (`--task-user`, GPUAI_AGENT_TASK_USER):
 *
 * - the agent runs as root: `spec` (`name`, `uid` or either with `:gid`), by default `nobody` from
 *   /etc/passwd, else 65534:65534. Never root (uid or gid 0): that is the hole this closes.
 * - the agent does not run as root: it cannot switch users, so `spec` is a ConfigError; without
 *   one, tasks run as the agent's own user, with a warning of what that exposes.
 */
export function resolveTaskUser(spec: string | undefined, options: ResolveTaskUserOptions = {}): TaskUserChoice {
  const agentUid = 'agentUid' in options ? options.agentUid : process.getuid?.();
  if (agentUid !== 0) {
    if (spec !== undefined) {
      throw new ConfigError(
        '--task-user',
        `cannot switch users: this agent runs as ${describeAgent(agentUid, options)}, not root. Run the agent as root to run tasks as another user, or leave --task-user (GPUAI_AGENT_TASK_USER) out to run them as this user`,
      );
    }
    const who = describeAgent(agentUid, options);
    return {
      user: undefined,
      warning: `the process runtime runs tasks as ${who}: they can read everything this user can, including this agent's keys; run the agent as root with --task-user, or use a container runtime`,
    };
  }
  const entries = parsePasswd(options.passwd ?? readPasswd());
  if (spec === undefined) {
    const nobody = entries.find((entry) => entry.name === 'nobody');
    return { user: nobody === undefined ? nobodyFallback : { ...nobody } };
  }
  return { user: parseSpec(spec, entries) };
}

function parseSpec(spec: string, entries: PasswdEntry[]): TaskUser {
  const match = /^([^:\s]+)(?::(\d+))?$/.exec(spec.trim());
  if (match === null) throw new ConfigError('--task-user', `must be <name|uid>[:gid], got "${spec}"`);
  const [, who = '', gidText] = match;
  let user: TaskUser;
  if (/^\d+$/.test(who)) {
    const uid = Number(who);
    const entry = entries.find((candidate) => candidate.uid === uid);
    // A uid without a passwd entry gets the group of the same number, unless one is given.
    user = { uid, gid: entry?.gid ?? uid, name: entry?.name ?? who };
  } else {
    const entry = entries.find((candidate) => candidate.name === who);
    if (entry === undefined) {
      throw new ConfigError('--task-user', `no user "${who}" in /etc/passwd; give a uid[:gid] instead`);
    }
    user = { ...entry };
  }
  if (gidText !== undefined) user.gid = Number(gidText);
  if (user.uid > 0xfffffffe || user.gid > 0xfffffffe) {
    throw new ConfigError('--task-user', `uid or gid out of range in "${spec}"`);
  }
  if (user.uid === 0 || user.gid === 0) {
    throw new ConfigError(
      '--task-user',
      `"${spec}" is root (uid ${user.uid}, gid ${user.gid}): tasks must run as an unprivileged user`,
    );
  }
  return user;
}

function describeAgent(uid: number | undefined, options: ResolveTaskUserOptions): string {
  let name = options.agentUser;
  if (name === undefined) {
    try {
      name = userInfo().username;
    } catch {
      name = undefined;
    }
  }
  if (uid === undefined) return name ?? "the agent's user";
  return name === undefined ? `uid ${uid}` : `${name} (uid ${uid})`;
}

/** For logs: `nobody (uid 65534, gid 65534)`. */
export const describeTaskUser = (user: TaskUser): string => `${user.name} (uid ${user.uid}, gid ${user.gid})`;
