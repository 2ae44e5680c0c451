#ifndef CLIBURING_SHIM_H
#define CLIBURING_SHIM_H
/* Pull in glibc's feature selection BEFORE liburing.h: liburing.h defines
 * _GNU_SOURCE/_XOPEN_SOURCE itself, which would give textually-included glibc
 * types (fd_set, ...) a different shape than in NIO's CNIOLinux module and
 * break the clang module ODR check. See docs/ARCHITECTURE.md (toolchain notes). */
#include <features.h>
#include <sys/types.h>
#include <sys/select.h>
#include <fcntl.h>
#include <liburing.h>

/* Function-like and enum-based macros are not imported into Swift. */
static const unsigned int CLIBURING_IOSQE_IO_LINK = IOSQE_IO_LINK;
static const unsigned int CLIBURING_IOSQE_IO_DRAIN = IOSQE_IO_DRAIN;
static const unsigned int CLIBURING_FSYNC_DATASYNC = IORING_FSYNC_DATASYNC;
static const int CLIBURING_O_DIRECT = __O_DIRECT;
#endif
