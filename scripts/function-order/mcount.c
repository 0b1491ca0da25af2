// Preloaded into the binaries `scripts/function-order.sh` builds with -Z instrument-mcount:
// every function they enter calls `mcount` first, and this one records each distinct address
// it is called from (so each function, once) with the order it was first seen in. At exit the
// process writes them to $MCOUNT_DIR/pcs.<pid>, after its command line, $MCOUNT_TAG (the
// workload) and its memory map (to take the load address off).
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
// Open addressing, never resized: a service runs some 10^4 functions.
#define CAP (1u << 21)
static uintptr_t table[CAP];
static unsigned long seq[CAP];
static unsigned long counter;

__attribute__((used)) void xenios_record_pc(uintptr_t pc) {
  size_t h = (size_t)((pc * 0x9E3779B97F4A7C15ull) >> 43) & (CAP - 1);
  for (;;) {
    uintptr_t cur = __atomic_load_n(&table[h], __ATOMIC_RELAXED);
    if (cur == pc) return;
    if (cur == 0) {
      uintptr_t expected = 0;
      if (__atomic_compare_exchange_n(&table[h], &expected, pc, 0, __ATOMIC_RELAXED,
                                      __ATOMIC_RELAXED)) {
        seq[h] = __atomic_add_fetch(&counter, 1, __ATOMIC_RELAXED);
        return;
      }
      if (expected == pc) return;
    }
    h = (h + 1) & (CAP - 1);
  }
}

// mcount is called before the function has read its arguments, so every register that may
// carry one (and rax, the count of vector arguments) is saved around the C call; the nine
// pushes leave the stack 16-byte aligned for it.
__asm__(
    ".globl mcount\n"
    ".type mcount,@function\n"
    "mcount:\n"
    "  push %rax\n push %rcx\n push %rdx\n push %rsi\n push %rdi\n push %r8\n push %r9\n push %r10\n push %r11\n"
        "  mov 72(%rsp), %rdi\n"
    "  call xenios_record_pc\n"
        "  pop %r11\n pop %r10\n pop %r9\n pop %r8\n pop %rdi\n pop %rsi\n pop %rdx\n pop %rcx\n pop %rax\n"
    "  ret\n"
    ".globl _mcount\n"
    ".set _mcount, mcount\n");

static void dump(void) {
  const char *dir = getenv("MCOUNT_DIR");
  if (!dir) return;
  char path[512];
  snprintf(path, sizeof path, "%s/pcs.%d", dir, getpid());
  FILE *f = fopen(path, "w");
  if (!f) return;
  // Which process this was: its command line and the workload's MCOUNT_TAG.
  FILE *cmdline = fopen("/proc/self/cmdline", "r");
  fprintf(f, "# cmdline ");
  int c;
  while (cmdline && (c = fgetc(cmdline)) != EOF) fputc(c && c != '\n' ? c : ' ', f);
  if (cmdline) fclose(cmdline);
  const char *tag = getenv("MCOUNT_TAG");
  fprintf(f, "\n# tag %s\n", tag ? tag : "");
  FILE *maps = fopen("/proc/self/maps", "r");
  char line[1024];
  while (maps && fgets(line, sizeof line, maps))
    if (strstr(line, "r-xp") || strstr(line, " 00000000 ")) fprintf(f, "# map %s", line);
  if (maps) fclose(maps);
  for (size_t i = 0; i < CAP; i++)
    if (table[i]) fprintf(f, "%lu %lx\n", seq[i], (unsigned long)table[i]);
  fclose(f);
}
__attribute__((constructor)) static void init(void) { atexit(dump); }
