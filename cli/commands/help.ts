/** Small helpers shared by the command definitions. */

/** An "Examples:" help section; every command has one, because examples are what people copy. */
export const examples = (lines: readonly string[]): string =>
  `\nExamples:\n${lines.map((line) => `  $ ${line}`).join('\n')}\n`;

/** Collects a repeatable option's values in order (commander's option argument parser). */
export const collect = (value: string, previous: string[] | undefined): string[] => [...(previous ?? []), value];
