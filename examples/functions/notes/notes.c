// notes: reads and writes the collection "notes" AS THE CALLER (their row-level-security
// policies apply; only the service key bypasses them).
//   GET  /functions/v1/notes        -> the answer of GET /rest/v1/notes?select=*&order=id as the caller
//   POST /functions/v1/notes {...}  -> inserts the body as a row (Prefer: return=representation)
// The answer is the host's {"status": N, "body": ...} of the database call, with that status.
// Deploy: aerodb functions deploy notes --file notes.wasm
#include "aerodb.h"

static char request[70000];
static char answer[1 << 20];
static char method[8];

static int put(char *dst, int at, const char *s) {
    while (*s) dst[at++] = *s++;
    return at;
}

int handle(void) {
    int m = aerodb_request_read(AERODB_METHOD, method, sizeof method);
    int n;
    if (m == 4 && method[0] == 'P' && method[1] == 'O') {
        n = put(request, 0, "{\"method\":\"POST\",\"path\":\"notes\",\"prefer\":\"return=representation\",\"body\":");
        int room = (int)sizeof request - n - 1;
        int len = aerodb_request_read(AERODB_BODY, request + n, room);
        if (len <= 0 || len > room) {
            aerodb_response_status(400);
            aerodb_response_write("{\"error\":\"send a JSON object of at most 64 KiB\"}", 48);
            return 0;
        }
        n += len;
        request[n++] = '}';
    } else {
        n = put(request, 0, "{\"method\":\"GET\",\"path\":\"notes\",\"query\":\"select=*&order=id\"}");
    }
    int len = aerodb_db_request(request, n);
    if (len < 0) {
        aerodb_response_status(500);
        aerodb_response_write("{\"error\":\"db_request refused\"}", 30);
        return 0;
    }
    int got = aerodb_db_result(answer, sizeof answer);
    if (got > (int)sizeof answer) got = sizeof answer;
    aerodb_log(AERODB_INFO, "notes: database call answered", 29);
    aerodb_response_status(aerodb_db_status(answer, got));
    aerodb_response_header("content-type", 12, "application/json", 16);
    aerodb_response_write(answer, got);
    return 0;
}
