import { describe, expect, it } from 'vitest';
import { ConfigError } from '../errors.js';
import { resolveTaskUser } from './task-user.js';

const passwd = [
  'root:x:0:0:root:/root:/bin/bash',
  'daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin',
  'nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin',
  'runner:x:1001:1002::/home/runner:/bin/sh',
  '# not an entry',
].join('\n');

const asRoot = { agentUid: 0, passwd };

describe('resolveTaskUser', () => {
  it('defaults to nobody from /etc/passwd when the agent is root', () => {
    expect(resolveTaskUser(undefined, asRoot)).toEqual({ user: { name: 'nobody', uid: 65534, gid: 65534 } });
  });

  it('falls back to 65534:65534 when /etc/passwd has no nobody', () => {
    expect(resolveTaskUser(undefined, { agentUid: 0, passwd: '' })).toEqual({
      user: { name: 'nobody', uid: 65534, gid: 65534 },
    });
  });

  it('takes a name, a uid, and either with a gid', () => {
    expect(resolveTaskUser('runner', asRoot).user).toEqual({ name: 'runner', uid: 1001, gid: 1002 });
    expect(resolveTaskUser('runner:3000', asRoot).user).toEqual({ name: 'runner', uid: 1001, gid: 3000 });
    expect(resolveTaskUser('1001', asRoot).user).toEqual({ name: 'runner', uid: 1001, gid: 1002 });
    expect(resolveTaskUser('4242', asRoot).user).toEqual({ name: '4242', uid: 4242, gid: 4242 });
    expect(resolveTaskUser('4242:4343', asRoot).user).toEqual({ name: '4242', uid: 4242, gid: 4343 });
  });

  it('refuses root, unknown names and malformed values', () => {
    for (const spec of ['root', '0', '0:5', 'runner:0', 'ghost', 'a:b', '1:2:3', '']) {
      expect(() => resolveTaskUser(spec, asRoot), spec).toThrow(ConfigError);
    }
    expect(() => resolveTaskUser('root', asRoot)).toThrow(/--task-user: "root" is root/);
  });

  it('cannot switch users when the agent is not root: --task-user is an error, and no value warns', () => {
    const asUser = { agentUid: 1000, agentUser: 'alice', passwd };
    expect(() => resolveTaskUser('nobody', asUser)).toThrow(
      /--task-user: cannot switch users: this agent runs as alice \(uid 1000\), not root/,
    );
    expect(resolveTaskUser(undefined, asUser)).toEqual({
      user: undefined,
      warning:
        "the process runtime runs tasks as alice (uid 1000): they can read everything this user can, including this agent's keys; run the agent as root with --task-user, or use a container runtime",
    });
  });
});
