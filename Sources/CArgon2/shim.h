// Debian's libargon2 (package libargon2-dev): the argon2id password hash used by /auth/v1.
#include <argon2.h>
