import { defineConfig } from 'vitest/config';

/**
 * What runs on AWS (adapters, Lambda handlers, the CDK app): the `lambda` project starts the AWS
 * emulators (moto, local-kms) for it, and `npm test` runs it a second time under Node 22.
 */
const lambdaTests = [
  'test/integration/aws-*.test.ts',
  'test/cloud/**/*.test.ts',
  'test/infra/**/*.test.ts',
  'functions/handlers/**/*.test.ts',
  // The cloud chaos run: the Lambda handlers on the emulators.
  'test/chaos/cloud.test.ts',
];

/**
 * The deployable bundles under AWS's Lambda Runtime Interface Emulator: a project of their own with
 * the same emulators, not in `lambda`, because they run on the Node 22 they install whatever Node
 * runs vitest, so the Node 22 lane would only repeat them.
 */
const bundleTests = ['test/bundles/**/*.test.ts'];

export default defineConfig({
  test: {
    testTimeout: 30_000,
    hookTimeout: 120_000,
    pool: 'forks',
    projects: [
      {
        extends: true,
        test: {
          name: 'core',
          include: ['**/*.test.ts'],
          exclude: ['**/node_modules/**', '**/cdk.out/**', '**/.tools/**', ...lambdaTests, ...bundleTests],
        },
      },
      {
        extends: true,
        test: {
          name: 'lambda',
          include: lambdaTests,
          globalSetup: ['test/emulators/global-setup.ts'],
        },
      },
      {
        extends: true,
        test: {
          name: 'bundles',
          include: bundleTests,
          globalSetup: ['test/emulators/global-setup.ts'],
        },
      },
    ],
  },
});
