#pragma once
#include <stdint.h>
#ifdef __cplusplus
extern "C" {
#endif
int emu_has(const char *name);
int emu_launch(const char *name, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
               unsigned shared, const uint64_t *args, int nargs, char *err, int errlen);
#ifdef __cplusplus
}
#endif
