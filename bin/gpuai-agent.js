#!/usr/bin/env node
// Runs the TypeScript edge agent through tsx's loader, so the repository needs no build step.
import { register } from 'tsx/esm/api';

register();
await import('../edge-agent/main.ts');
