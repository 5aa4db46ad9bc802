/*
 * stackbd's optional fast paths (Linux). Plain node:fs hands every positional read to libuv's
 * thread pool, and on a small machine that hand-off costs more than a read of cached data.
 *
 *   readCached(fd, buffer, position)  preadv2(RWF_NOWAIT) on the calling thread: the bytes read,
 *                                     or -EAGAIN when the data is not in the page cache (the
 *                                     caller then reads through the pool), or -errno.
 *   seekData(fd, offset) / seekHole(fd, offset)
 *                                     lseek(SEEK_DATA / SEEK_HOLE): where data or a hole starts
 *                                     (-ENXIO past the last data), or -errno.
 *   punchHole(fd, offset, length)     fallocate(PUNCH_HOLE|KEEP_SIZE) on the thread pool: a
 *                                     Promise of 0 or -errno.
 *   zeroRange(fd, offset, length)     fallocate(ZERO_RANGE|KEEP_SIZE) on the thread pool: zeros
 *                                     that stay allocated; 0 or -errno.
 *   lockFile(fd, mode)                flock(LOCK_SH or LOCK_EX, non-blocking) for mode 1 or 2,
 *                                     LOCK_UN for 0: 0, or -EWOULDBLOCK when another open file
 *                                     holds a conflicting lock, or -errno.
 *   peerClosed(fd)                    poll(POLLRDHUP) without waiting: 1 when the peer of a
 *                                     socket has closed its side (its FIN has arrived, even with
 *                                     data still unread before it), 0 when not, or -errno.
 *   sdNotify(socketPath, message)     sends `message` as one datagram to the unix socket
 *                                     `socketPath` ('@' first: the abstract namespace), as
 *                                     sd_notify(3) does for NOTIFY_SOCKET (node:dgram has no
 *                                     unix datagram sockets); never waits: 0 or -errno.
 *
 * Errors are returned as negative numbers rather than thrown: the callers decide per errno.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <node_api.h>
#include <poll.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#ifndef RWF_NOWAIT
#define RWF_NOWAIT 0x00000008
#endif

#define CHECK(env, call)                                                  \
  do {                                                                    \
    if ((call) != napi_ok) {                                              \
      napi_throw_error((env), NULL, "stackbd-native: N-API call failed"); \
      return NULL;                                                        \
    }                                                                     \
  } while (0)

static napi_value make_number(napi_env env, double value) {
  napi_value out;
  if (napi_create_double(env, value, &out) != napi_ok) return NULL;
  return out;
}

/* Reads argument i as an integer that fits in an int64 (fd, offsets, lengths). */
static int get_int64(napi_env env, napi_value value, int64_t *out) {
  return napi_get_value_int64(env, value, out) == napi_ok;
}

static napi_value read_cached(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int64_t fd, position;
  void *data;
  size_t length;
  bool is_typed = false;
  if (argc < 3 || !get_int64(env, argv[0], &fd) || !get_int64(env, argv[2], &position)) {
    napi_throw_type_error(env, NULL, "readCached(fd, buffer, position)");
    return NULL;
  }
  CHECK(env, napi_is_typedarray(env, argv[1], &is_typed));
  if (!is_typed) {
    napi_throw_type_error(env, NULL, "readCached: buffer must be a Uint8Array");
    return NULL;
  }
  napi_typedarray_type type;
  napi_value arraybuffer;
  size_t byte_offset;
  CHECK(env, napi_get_typedarray_info(env, argv[1], &type, &length, &data, &arraybuffer, &byte_offset));
  struct iovec iov = {data, length};
  ssize_t n = preadv2((int)fd, &iov, 1, (off_t)position, RWF_NOWAIT);
  return make_number(env, n < 0 ? -(double)errno : (double)n);
}

static napi_value seek_whence(napi_env env, napi_callback_info info, int whence) {
  size_t argc = 2;
  napi_value argv[2];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int64_t fd, offset;
  if (argc < 2 || !get_int64(env, argv[0], &fd) || !get_int64(env, argv[1], &offset)) {
    napi_throw_type_error(env, NULL, "seekData/seekHole(fd, offset)");
    return NULL;
  }
  off_t r = lseek((int)fd, (off_t)offset, whence);
  return make_number(env, r < 0 ? -(double)errno : (double)r);
}

static napi_value seek_data(napi_env env, napi_callback_info info) { return seek_whence(env, info, SEEK_DATA); }
static napi_value seek_hole(napi_env env, napi_callback_info info) { return seek_whence(env, info, SEEK_HOLE); }

/* fallocate on the thread pool: it can take a while on large ranges. */
typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  int fd;
  int mode;
  int64_t offset;
  int64_t length;
  int result;
} falloc_job;

static void falloc_execute(napi_env env, void *data) {
  (void)env;
  falloc_job *job = data;
  job->result = fallocate(job->fd, job->mode, (off_t)job->offset, (off_t)job->length) < 0 ? -errno : 0;
}

static void falloc_complete(napi_env env, napi_status status, void *data) {
  falloc_job *job = data;
  napi_value value;
  if (status == napi_ok && napi_create_int32(env, job->result, &value) == napi_ok) {
    napi_resolve_deferred(env, job->deferred, value);
  } else {
    napi_value message, error;
    napi_create_string_utf8(env, "stackbd-native: fallocate job failed", NAPI_AUTO_LENGTH, &message);
    napi_create_error(env, NULL, message, &error);
    napi_reject_deferred(env, job->deferred, error);
  }
  napi_delete_async_work(env, job->work);
  free(job);
}

static napi_value falloc_async(napi_env env, napi_callback_info info, int mode, const char *name) {
  size_t argc = 3;
  napi_value argv[3];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int64_t fd, offset, length;
  if (argc < 3 || !get_int64(env, argv[0], &fd) || !get_int64(env, argv[1], &offset) || !get_int64(env, argv[2], &length)) {
    napi_throw_type_error(env, NULL, "punchHole/zeroRange(fd, offset, length)");
    return NULL;
  }
  falloc_job *job = calloc(1, sizeof(*job));
  if (!job) {
    napi_throw_error(env, NULL, "stackbd-native: out of memory");
    return NULL;
  }
  job->fd = (int)fd;
  job->mode = mode;
  job->offset = offset;
  job->length = length;
  napi_value promise, resource_name;
  CHECK(env, napi_create_promise(env, &job->deferred, &promise));
  CHECK(env, napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &resource_name));
  CHECK(env, napi_create_async_work(env, NULL, resource_name, falloc_execute, falloc_complete, job, &job->work));
  CHECK(env, napi_queue_async_work(env, job->work));
  return promise;
}

static napi_value punch_hole(napi_env env, napi_callback_info info) {
  return falloc_async(env, info, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, "stackbd.punchHole");
}

static napi_value zero_range(napi_env env, napi_callback_info info) {
  return falloc_async(env, info, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, "stackbd.zeroRange");
}

static napi_value lock_file(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int64_t fd, mode;
  if (argc < 2 || !get_int64(env, argv[0], &fd) || !get_int64(env, argv[1], &mode) || mode < 0 || mode > 2) {
    napi_throw_type_error(env, NULL, "lockFile(fd, mode 0|1|2)");
    return NULL;
  }
  int op = mode == 0 ? LOCK_UN : mode == 1 ? (LOCK_SH | LOCK_NB) : (LOCK_EX | LOCK_NB);
  return make_number(env, flock((int)fd, op) < 0 ? -(double)errno : 0);
}

static napi_value peer_closed(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int64_t fd;
  if (argc < 1 || !get_int64(env, argv[0], &fd)) {
    napi_throw_type_error(env, NULL, "peerClosed(fd)");
    return NULL;
  }
  struct pollfd p = {.fd = (int)fd, .events = POLLRDHUP, .revents = 0};
  int n = poll(&p, 1, 0);
  if (n < 0) return make_number(env, -(double)errno);
  if (n > 0 && (p.revents & POLLNVAL)) return make_number(env, -(double)EBADF);
  return make_number(env, n > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR)) ? 1 : 0);
}

static napi_value sd_notify_send(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  struct sockaddr_un addr;
  memset(&addr, 0, sizeof(addr));
  addr.sun_family = AF_UNIX;
  /* One byte more than sun_path holds: a path that fills sun_path may have been cut short, so
   * it counts as too long. */
  char path[sizeof(addr.sun_path) + 1];
  size_t path_length, message_length;
  if (argc < 2 || napi_get_value_string_utf8(env, argv[0], path, sizeof(path), &path_length) != napi_ok ||
      napi_get_value_string_utf8(env, argv[1], NULL, 0, &message_length) != napi_ok) {
    napi_throw_type_error(env, NULL, "sdNotify(socketPath, message)");
    return NULL;
  }
  if (path_length < 2 || path_length >= sizeof(addr.sun_path) || (path[0] != '/' && path[0] != '@')) return make_number(env, -(double)EINVAL);
  memcpy(addr.sun_path, path, path_length);
  if (path[0] == '@') addr.sun_path[0] = '\0';
  char *message = malloc(message_length + 1);
  if (message == NULL) return make_number(env, -(double)ENOMEM);
  if (napi_get_value_string_utf8(env, argv[1], message, message_length + 1, &message_length) != napi_ok) {
    free(message);
    napi_throw_error(env, NULL, "stackbd-native: N-API call failed");
    return NULL;
  }
  int result = 0;
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    result = -errno;
  } else {
    socklen_t length = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + path_length);
    if (sendto(fd, message, message_length, MSG_DONTWAIT | MSG_NOSIGNAL, (struct sockaddr *)&addr, length) < 0) result = -errno;
    close(fd);
  }
  free(message);
  return make_number(env, result);
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"readCached", NULL, read_cached, NULL, NULL, NULL, napi_default, NULL},
      {"seekData", NULL, seek_data, NULL, NULL, NULL, napi_default, NULL},
      {"seekHole", NULL, seek_hole, NULL, NULL, NULL, napi_default, NULL},
      {"punchHole", NULL, punch_hole, NULL, NULL, NULL, napi_default, NULL},
      {"zeroRange", NULL, zero_range, NULL, NULL, NULL, napi_default, NULL},
      {"lockFile", NULL, lock_file, NULL, NULL, NULL, napi_default, NULL},
      {"peerClosed", NULL, peer_closed, NULL, NULL, NULL, napi_default, NULL},
      {"sdNotify", NULL, sd_notify_send, NULL, NULL, NULL, napi_default, NULL},
  };
  if (napi_define_properties(env, exports, sizeof(props) / sizeof(props[0]), props) != napi_ok) return NULL;
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
