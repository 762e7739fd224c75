/** A scenario's result: a titled table with notes, rendered to Markdown. */
export interface Table {
  title: string;
  method: string;
  columns: string[];
  rows: string[][];
  notes: string[];
}

export function markdown(t: Table): string {
  const head = `| ${t.columns.join(' | ')} |\n|${t.columns.map(() => '---').join('|')}|\n`;
  const body = t.rows.map((r) => `| ${r.join(' | ')} |`).join('\n');
  // A note that is a Markdown table row stays a row, an empty one a blank line; others become bullets.
  const notes = t.notes.length ? `\n\n${t.notes.map((n) => (n === '' || n.startsWith('|') ? n : `- ${n}`)).join('\n')}` : '';
  return `### ${t.title}\n\n${t.method}\n\n${head}${body}${notes}\n`;
}
