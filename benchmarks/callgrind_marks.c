/* Callgrind client requests for benchmarks/callgrind_probe.py: start and stop counting around the
 * measured calls only. Built by benchmarks/callgrind.py (gcc -shared), loaded with ctypes; outside
 * valgrind each request is a handful of no-op instructions. */
#include <valgrind/callgrind.h>

/* Instrumentation starts here (the process ran uninstrumented until now: start-up and warm-up are
 * neither counted nor slowed down); counters start from zero for every thread. */
void measure_start(void) {
    CALLGRIND_START_INSTRUMENTATION;
    CALLGRIND_ZERO_STATS;
}

/* Writes what every thread executed since measure_start() to a dump whose trigger names `label`. */
void measure_stop(const char *label) {
    CALLGRIND_DUMP_STATS_AT(label);
    CALLGRIND_STOP_INSTRUMENTATION;
}
