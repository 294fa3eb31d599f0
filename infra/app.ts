/**
 * The CDK app (`npx cdk synth`, `npx cdk deploy`; cdk.json runs it): one GPUAI stack, configured
 * from the CDK context. The stack is environment-agnostic, so synth needs no credentials and
 * deploy targets the account and region of the caller's AWS profile.
 *
 * @module
 */
import { App, Tags } from 'aws-cdk-lib';
import { readContext } from './context.js';
import { GpuaiStack } from './gpuai-stack.js';

const app = new App();
const { stackName, settings } = readContext(app.node);
new GpuaiStack(app, stackName, { settings, description: 'GPUAI control plane' });
Tags.of(app).add('project', 'gpuai');
app.synth();
