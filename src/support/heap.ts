/**
 * How the process's heap grows. A run allocates fast and briefly: decoded messages, records, row-group
 * buffers that live until their row group is encoded and then die in the old generation. V8 sizes the old
 * generation's next collection from the live size and the allocation rate, and on a fast run lets it grow
 * to several times the live data (measured: ~50 MiB live, ~170 MiB of heap before the first full
 * collection, 325 MiB RSS writing Parquet). A growing factor of 1.5 makes it collect sooner: peak RSS about
 * 210 MiB for the same run, at no measurable CPU cost (docs/benchmarks.md). Set at module load, before the
 * run allocates; Lambda's NODE_OPTIONS does not accept this V8 flag, so the entry points set it themselves.
 */
import v8 from 'node:v8';

export const HEAP_GROWING_PERCENT = 50;

v8.setFlagsFromString(`--heap-growing-percent=${HEAP_GROWING_PERCENT}`);
