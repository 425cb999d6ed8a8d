/* aioburst: keep many O_DIRECT requests in flight at once (Linux native AIO through raw syscalls, no libaio), so
 * the NVMe driver holds that many DMA mappings (IOVAs) together and frees them in a burst at completion.
 * usage: aioburst DEV COUNT BYTES [BUF_OFFSET] [w]
 *   COUNT requests of BYTES each at distinct offsets; BUF_OFFSET (a multiple of 512) misaligns the buffers so a
 *   128 KiB request spans 33 pages (an IOVA too large for the rcache); "w" writes instead of reading.
 * Built statically by `iovatrace lab run` when gcc can (the stress workload runs without it otherwise). */
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/aio_abi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	if (argc < 4) {
		fprintf(stderr, "usage: %s DEV COUNT BYTES [BUF_OFFSET] [w]\n", argv[0]);
		return 2;
	}
	int count = atoi(argv[2]);
	long bytes = atol(argv[3]), boff = argc > 4 ? atol(argv[4]) : 0;
	int write = argc > 5 && argv[5][0] == 'w';
	int fd = open(argv[1], (write ? O_RDWR : O_RDONLY) | O_DIRECT);
	if (fd < 0 || count <= 0) {
		perror("open");
		return 1;
	}
	size_t stride = ((size_t)bytes + boff + 4095) & ~(size_t)4095;
	char *mem;
	/* 64 distinct buffers are enough: every request is still its own mapping */
	int nbuf = count < 64 ? count : 64;
	if (posix_memalign((void **)&mem, 4096, stride * nbuf))
		return 1;
	memset(mem, 0x5a, stride * nbuf);
	aio_context_t ctx = 0;
	if (syscall(SYS_io_setup, count, &ctx)) {
		perror("io_setup");
		return 1;
	}
	struct iocb *cb = calloc(count, sizeof(*cb));
	struct iocb **list = calloc(count, sizeof(*list));
	struct io_event *ev = calloc(count, sizeof(*ev));
	const long span = 128L << 20; /* offsets wrap inside the first 128 MiB (+64 MiB for writes) */
	for (int i = 0; i < count; i++) {
		cb[i].aio_fildes = fd;
		cb[i].aio_lio_opcode = write ? IOCB_CMD_PWRITE : IOCB_CMD_PREAD;
		cb[i].aio_buf = (uint64_t)(uintptr_t)(mem + (size_t)(i % nbuf) * stride + boff);
		cb[i].aio_nbytes = bytes;
		cb[i].aio_offset = ((long)i * 2 * ((bytes + 4095) & ~4095L)) % span + (write ? (64L << 20) : 0);
		list[i] = &cb[i];
	}
	int sent = 0, done = 0, bad = 0;
	while (sent < count) {
		long n = syscall(SYS_io_submit, ctx, count - sent, list + sent);
		if (n <= 0)
			break;
		sent += n;
	}
	while (done < sent) {
		long n = syscall(SYS_io_getevents, ctx, 1, sent - done, ev + done, NULL);
		if (n <= 0)
			break;
		done += n;
	}
	for (int i = 0; i < done; i++)
		bad += (long)ev[i].res != bytes;
	printf("aioburst: %d submitted, %d completed, %d short (%ld bytes, offset %ld, %s)\n", sent, done, bad, bytes,
	       boff, write ? "write" : "read");
	return 0;
}
