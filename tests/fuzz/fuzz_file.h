/* For the fuzz targets that read a file: run.c without main and with errors
   returning through fuzz_escape, and the input written to a file of this
   process's own. Returns its path, or NULL if it cannot be written. */
#define RUN_NO_MAIN
#define RUN_FUZZING
#include "../../run.c"

static const char *write_input(const char *kind, const uint8_t *data, size_t size) {
    static char path[64];
    if (!path[0]) snprintf(path, sizeof path, "/tmp/fuzz-%s-%d.bin", kind, (int)getpid());
    FILE *f = fopen(path, "wb");
    if (!f) return NULL;
    fwrite(data, 1, size, f);
    fclose(f);
    return path;
}
