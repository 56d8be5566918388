/* A library with thread-local storage: each copy dlopen'd under another name is another TLS
 * module, so loading many grows every thread's dynamic TLS vector (glibc's __tls_get_addr
 * then calls malloc). */
__thread char tls_buf[4096];

char *tls_touch(void) {
    tls_buf[0]++;
    return tls_buf;
}
