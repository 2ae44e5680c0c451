/* aerodb.h: the host ABI of AeroDB functions, version 1 (docs/FUNCTIONS.md "Host ABI").
 *
 * A function is a wasm32 module that exports its linear memory as "memory" and
 *     int32_t handle(void);      // 0 = success; anything else = failure (HTTP 500)
 * and imports only the functions below, from module "aerodb". Pointers are byte offsets into
 * the module's own memory; every range is bounds-checked by the host (an out-of-range pointer
 * ends the invocation with AERO_FUNCTION_FAILED).
 *
 * Build (clang, lld; no libc needed):
 *   clang --target=wasm32 -O2 -nostdlib -Wl,--no-entry -Wl,--export=handle \
 *         -Wl,--allow-undefined -o f.wasm f.c
 * (the memory is exported by default by wasm-ld; --allow-undefined leaves the aerodb.*
 * functions as imports.)
 */
#ifndef AERODB_H
#define AERODB_H

#include <stdint.h>

#define AERODB_IMPORT(name) __attribute__((import_module("aerodb"), import_name(name)))

/* request_read parts */
enum {
    AERODB_METHOD = 0,   /* "GET", "POST", ... */
    AERODB_PATH = 1,     /* the path after /functions/v1/<name>, "" or "/a/b" */
    AERODB_QUERY = 2,    /* the query string, without "?" */
    AERODB_BODY = 3,     /* the request body */
    AERODB_ROLE = 4,     /* the caller's role: "anon", "authenticated", "service_role" */
    AERODB_USER_ID = 5,  /* the caller's user id (uuid text), "" without a user */
    AERODB_ARGS = 6,     /* rpc arguments as a JSON object ("{}" when not an rpc call) */
    AERODB_NAME = 7,     /* the function's name */
    AERODB_VERSION = 8,  /* the running version, decimal text */
};

enum { AERODB_DEBUG = 0, AERODB_INFO = 1, AERODB_WARN = 2, AERODB_ERROR = 3 };

/* Copies min(len, cap) bytes of a request part to dst; returns len (call with cap 0 to size a
 * buffer), or -1 for an unknown part. */
AERODB_IMPORT("request_read") int32_t aerodb_request_read(int32_t part, void *dst, int32_t cap);
/* A request header (case-insensitive name); copies like request_read; returns its length or -1. */
AERODB_IMPORT("request_header") int32_t aerodb_request_header(const char *name, int32_t name_len, void *dst, int32_t cap);
/* Sets the HTTP status (default 200); 0, or -1 outside 100..599. */
AERODB_IMPORT("response_status") int32_t aerodb_response_status(int32_t code);
/* Adds a response header; 0, -1 invalid name/value, -2 too many headers. */
AERODB_IMPORT("response_header") int32_t aerodb_response_header(const char *name, int32_t name_len, const char *value, int32_t value_len);
/* Appends to the response body; 0. Past the response_bytes limit the invocation ends (no return). */
AERODB_IMPORT("response_write") int32_t aerodb_response_write(const void *data, int32_t len);
/* One log line; 0 kept, 1 dropped (log_bytes limit reached). */
AERODB_IMPORT("log") int32_t aerodb_log(int32_t level, const char *message, int32_t len);
/* A config or secret value; copies like request_read; returns its length or -1 when absent. */
AERODB_IMPORT("config_get") int32_t aerodb_config_get(const char *name, int32_t name_len, void *dst, int32_t cap);
/* Wall-clock milliseconds since the Unix epoch. */
AERODB_IMPORT("time_now_ms") int64_t aerodb_time_now_ms(void);
/* A database request as the caller: JSON {"method","path","query","body","prefer"} (PostgREST
 * syntax, like /rest/v1/<path>?<query>). Returns the length of the answer
 * {"status": N, "body": ...} (read it with aerodb_db_result), -1 malformed request, -2 db_calls
 * limit reached. */
AERODB_IMPORT("db_request") int32_t aerodb_db_request(const char *request, int32_t len);
/* Copies min(len, cap) bytes of the last db_request answer; returns len. */
AERODB_IMPORT("db_result") int32_t aerodb_db_result(void *dst, int32_t cap);

/* The status N of a db_result answer {"status":N,...} (500 when there is none): a helper in C,
 * not a host call. */
static inline int aerodb_db_status(const char *answer, int n) {
    for (int i = 0; i + 8 < n; i++) {
        if (answer[i] == 's' && answer[i + 1] == 't' && answer[i + 6] == '"' && answer[i + 7] == ':') {
            int v = 0, j = i + 8;
            while (j < n && answer[j] >= '0' && answer[j] <= '9') v = v * 10 + (answer[j++] - '0');
            return v;
        }
    }
    return 500;
}

#endif
