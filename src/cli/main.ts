// `qsync`: the command-line entry point. Commands arrive with the issues that
// build them (DESIGN.md §9); an unknown command is a clear error, exit 2.
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

const usage = `qsync: quorum-synchronous replication for PostgreSQL

usage: qsync <command> [options]

commands:
  version     print the version
  help        print this help

Commands to start and operate a cluster (cluster up, start, status, table,
promote, demote, transfer, drill) are not built yet; see README.md.
`;

const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };

const { positionals, values } = parseArgs({ allowPositionals: true, strict: false, options: { help: { type: 'boolean', short: 'h' }, version: { type: 'boolean', short: 'V' } } });
const command = values.version === true ? 'version' : values.help === true ? 'help' : (positionals[0] ?? 'help');

switch (command) {
  case 'version':
    console.log(pkg.version);
    break;
  case 'help':
    console.log(usage);
    break;
  default:
    console.error(`qsync: unknown command '${command}'\n\n${usage}`);
    process.exitCode = 2;
}
