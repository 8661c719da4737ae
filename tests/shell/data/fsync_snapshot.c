/* Stand-in for a disk that keeps only what was synced (tests/shell/test_power_loss.py).
 *
 * Loaded with LD_PRELOAD, it wraps fsync(2) and fdatasync(2): after the real call succeeds
 * on a regular file under $I24NET_SNAPSHOT_DIR, the file's whole content is copied to
 * "<file>.synced" (through "<file>.synced~<pid>" and a rename, under an flock of
 * "<file>.synced.lock" so that two processes syncing one file leave the later copy). A
 * "power loss" is then: kill every process, and put each file back as its last ".synced"
 * copy (or remove it, if it was never synced). Writes that reached the kernel but were
 * never synced are lost, as they would be on a machine that loses power.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

static void snapshot(int fd) {
    const char *watch = getenv("I24NET_SNAPSHOT_DIR");
    if (watch == NULL || *watch == '\0')
        return;
    char link[64], path[PATH_MAX];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof path - 1);
    if (n <= 0)
        return;
    path[n] = '\0';
    if (strncmp(path, watch, strlen(watch)) != 0)
        return;
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode))
        return;
    char lock[PATH_MAX + 32], tmp[PATH_MAX + 32], dst[PATH_MAX + 32];
    snprintf(lock, sizeof lock, "%s.synced.lock", path);
    snprintf(tmp, sizeof tmp, "%s.synced~%d", path, (int)getpid());
    snprintf(dst, sizeof dst, "%s.synced", path);
    int lk = open(lock, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    if (lk < 0)
        return;
    flock(lk, LOCK_EX);
    int in = open(path, O_RDONLY | O_CLOEXEC);
    int out = in < 0 ? -1 : open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    int ok = in >= 0 && out >= 0;
    char buf[1 << 16];
    ssize_t r;
    while (ok && (r = read(in, buf, sizeof buf)) > 0)
        ok = write(out, buf, (size_t)r) == r;
    if (in >= 0)
        close(in);
    if (out >= 0)
        close(out);
    if (ok)
        rename(tmp, dst);
    else
        unlink(tmp);
    flock(lk, LOCK_UN);
    close(lk);
}

int fsync(int fd) {
    static int (*real)(int) = NULL;
    if (real == NULL)
        real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    int rc = real(fd);
    if (rc == 0)
        snapshot(fd);
    return rc;
}

int fdatasync(int fd) {
    static int (*real)(int) = NULL;
    if (real == NULL)
        real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    int rc = real(fd);
    if (rc == 0)
        snapshot(fd);
    return rc;
}
