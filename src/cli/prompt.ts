// Yes/no questions as LXD asks them: the question on stdout, one answer per line, the default on an
// empty line, and no answer at all (stdin closed or absent) taken as "no".

import { createInterface } from 'node:readline';
import type { CliIO } from './context.js';

/** Parse one answer: true/false, or null when it is not a yes/no answer (then the question is repeated). */
export function parseYesNo(answer: string, defaultAnswer: boolean): boolean | null {
  const a = answer.trim().toLowerCase();
  if (a === '') return defaultAnswer;
  if (a === 'y' || a === 'yes') return true;
  if (a === 'n' || a === 'no') return false;
  return null;
}

/** Ask `question` until the answer is yes or no; an exhausted stdin answers `defaultAnswer`. */
export async function askBool(question: string, io: CliIO, defaultAnswer = false): Promise<boolean> {
  io.stdout.write(question);
  if (!io.stdin) {
    io.stdout.write('\n');
    return defaultAnswer;
  }
  const rl = createInterface({ input: io.stdin, terminal: false });
  try {
    for await (const line of rl) {
      const answer = parseYesNo(line, defaultAnswer);
      if (answer !== null) return answer;
      io.stdout.write(`Invalid input, try again.\n\n${question}`);
    }
    io.stdout.write('\n');
    return defaultAnswer;
  } finally {
    rl.close();
  }
}
