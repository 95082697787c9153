# voxtral - Voxtral Realtime speech-to-text in C (CPU) and CUDA.
# `make help` lists the targets.

CC       ?= cc
NVCC     ?= $(CUDA_HOME)/bin/nvcc
CUDA_HOME ?= /usr/local/cuda
# CPU_ISA: native (this machine), avx512 (x86-64-v4), avx2 (x86-64-v3), generic (x86-64)
CPU_ISA  ?= native
MARCH    := $(if $(filter avx512,$(CPU_ISA)),x86-64-v4,$(if $(filter avx2,$(CPU_ISA)),x86-64-v3,$(if $(filter generic,$(CPU_ISA)),x86-64,$(CPU_ISA))))
OPT      ?= -O3
CFLAGS   ?= $(OPT) -g
CFLAGS   += -std=c11 -D_GNU_SOURCE -Wall -Wextra -Wno-unused-parameter -march=$(MARCH) -fopenmp -I.
PREFIX   ?= /usr/local
VERSION  := 0.1.0
PKGS     := sndfile soxr fftw3f libcjson
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null || echo -lsndfile -lsoxr -lfftw3f -lcjson)
BLAS_CFLAGS := $(shell pkg-config --cflags openblas 2>/dev/null)
BLAS_LIBS   := $(shell pkg-config --libs openblas 2>/dev/null || echo -lopenblas)
LIBS     := $(PKG_LIBS) $(BLAS_LIBS) -lm -lpthread -fopenmp
CFLAGS   += $(PKG_CFLAGS) $(BLAS_CFLAGS)

# SANITIZE=address,undefined (make asan): a sanitizer build of its own in build/asan,
# CPU only, -O1, any UB fatal; `make asan-test` runs the suite on it.
SANITIZE ?=
ifneq ($(SANITIZE),)
  CUDA   := 0
  OPT    := -O1 -fno-omit-frame-pointer -fsanitize=$(SANITIZE) -fno-sanitize-recover=all
  LIBS   += -fsanitize=$(SANITIZE)
endif
# CUDA=auto builds the CUDA backend when nvcc is found; CUDA=0 / CUDA=1 force it.
CUDA     ?= auto
ifeq ($(CUDA),auto)
  CUDA := $(shell test -x $(NVCC) && echo 1 || echo 0)
endif
# CUDA_ARCH: list of SM numbers ("90", "75 80 86 89 90"): SASS for each, PTX for the
# newest. Default: the local GPU, else a list for common cards this nvcc supports.
CUDA_ARCH ?= $(shell nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d '.')
ifeq ($(strip $(CUDA_ARCH)),)
  CUDA_ARCH := $(filter $(shell $(NVCC) --list-gpu-arch 2>/dev/null | sed 's/compute_//'),75 80 86 89 90)
  ifeq ($(strip $(CUDA_ARCH)),)
    CUDA_ARCH := 80 90
  endif
endif
NVCC_GENCODE := $(foreach a,$(CUDA_ARCH),-gencode arch=compute_$(a),code=sm_$(a)) \
                -gencode arch=compute_$(lastword $(CUDA_ARCH)),code=compute_$(lastword $(CUDA_ARCH))
NVCCFLAGS ?= -O3 -lineinfo
NVCCFLAGS += -std=c++17 $(NVCC_GENCODE) -I. -Xcompiler -Wall
# NVCC_CCBIN=g++-12: the host compiler nvcc uses, when the default one is too new for it
# (default: $CXX when the environment sets it, its last word: "ccache g++" gives g++;
# else nvcc's own choice). Passed as -ccbin only: nvcc also reads NVCC_CCBIN from its
# environment, where an empty value breaks it, so make never exports it.
ifeq ($(origin CXX),environment)
NVCC_CCBIN ?= $(lastword $(CXX))
endif
unexport NVCC_CCBIN
NVCCFLAGS += $(if $(NVCC_CCBIN),-ccbin $(NVCC_CCBIN))

# PORTAUDIO=auto uses PortAudio for --mic when its pkg-config file is found
PORTAUDIO ?= auto
ifeq ($(PORTAUDIO),auto)
  PORTAUDIO := $(shell pkg-config --exists portaudio-2.0 && echo 1 || echo 0)
endif

BUILD    := build/$(if $(SANITIZE),asan,$(if $(filter 1,$(CUDA)),cuda,cpu))
# the engine (libvoxtral) and the command line (cli/, a client of voxtral.h only)
ENGINE_SRC := voxtral.c voxtral_forward.c voxtral_stream.c voxtral_sched.c voxtral_audio.c voxtral_kernels.c \
              voxtral_loader.c voxtral_tokenizer.c voxtral_error.c voxtral_audiofile.c voxtral_text.c voxtral_quant.c
# the quantized dot kernels: one file per instruction set, the one -march=$(MARCH) enables
ISA_MACROS := $(shell $(CC) -march=$(MARCH) -dM -E -x c /dev/null 2>/dev/null)
QDOT_ISA := $(if $(findstring __AVX512BW__,$(ISA_MACROS)),avx512,$(if $(findstring __AVX2__,$(ISA_MACROS)),$(if $(findstring __FMA__,$(ISA_MACROS)),avx2,generic),generic))
ENGINE_SRC += voxtral_qdot_$(QDOT_ISA).c
CLI_SRC  := cli/main.c cli/options.c cli/output.c cli/sniff.c cli/forced.c cli/error.c cli/stdin.c cli/check.c
CLI_LIBS := -ldl
ifeq ($(PORTAUDIO),1)
  CLI_SRC  += cli/mic.c
  CLI_CFLAGS := $(shell pkg-config --cflags portaudio-2.0)
  CLI_LIBS += $(shell pkg-config --libs portaudio-2.0)
else
  CLI_SRC  += cli/nomic.c
endif
# `voxtral serve` (server/, libwebsockets): part of the program, a client of voxtral.h;
# without libwebsockets (SERVER=0, or auto and pkg-config finds none) a stand-in says so
SERVER ?= auto
ifeq ($(SERVER),auto)
  SERVER := $(shell pkg-config --exists libwebsockets && echo 1 || echo 0)
endif
ifeq ($(SERVER),1)
  CLI_SRC  += $(wildcard server/*.c)
  CLI_CFLAGS += $(shell pkg-config --cflags libwebsockets 2>/dev/null)
  CLI_LIBS += $(shell pkg-config --libs libwebsockets 2>/dev/null || echo -lwebsockets)
else
  CLI_SRC  += cli/noserver.c
endif
ifeq ($(CUDA),1)
  ENGINE_SRC += voxtral_cuda.c voxtral_cuda_gemm.c voxtral_cuda_weights.c
  CU_SRC   := $(wildcard cuda/*.cu)
  CFLAGS   += -I$(CUDA_HOME)/include
  LIBS     += -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcublasLt -lcublas -lcudart -lstdc++ -ldl
else
  ENGINE_SRC += voxtral_nocuda.c
  CU_SRC   :=
endif
ENGINE_OBJ := $(ENGINE_SRC:%.c=$(BUILD)/%.o) $(CU_SRC:%.cu=$(BUILD)/%.o)
CLI_OBJ  := $(CLI_SRC:%.c=$(BUILD)/%.o)
# the shared library: objects are position-independent; its soname carries the major version
SONAME   := libvoxtral.so.$(firstword $(subst ., ,$(VERSION)))
CFLAGS   += -fPIC
NVCCFLAGS += -Xcompiler -fPIC

# A change of build settings rebuilds everything: the settings live in a stamp file.
CONFIG := PIC=1 CPU_ISA=$(CPU_ISA) OPT=$(OPT) PORTAUDIO=$(PORTAUDIO) SERVER=$(SERVER) CUDA_ARCH=$(CUDA_ARCH) NVCC_CCBIN=$(NVCC_CCBIN)
STAMP  := $(BUILD)/config.stamp
$(shell mkdir -p $(BUILD) && (echo '$(CONFIG)' | cmp -s - $(STAMP) || echo '$(CONFIG)' > $(STAMP)))
TEST_SRC := $(wildcard tests/test_*.c)
TEST_BIN := $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)

comma := ,
.PHONY: all voxtral cpu cuda test bench bench-streams bench-cuda-encoder clean help debug asan asan-test fuzz cuda-check tests install uninstall
all: voxtral $(BUILD)/$(SONAME)

# ./voxtral is a copy of the last build's binary (build/cpu or build/cuda)
voxtral: $(BUILD)/voxtral
	@$(if $(SANITIZE),echo "sanitizer build: $< (./voxtral left alone)",cp $< $@)

$(BUILD)/voxtral: $(BUILD)/libvoxtral.a $(CLI_OBJ)
	$(CC) $(CFLAGS) -o $@ $(CLI_OBJ) $(BUILD)/libvoxtral.a $(LIBS) $(CLI_LIBS)

$(BUILD)/libvoxtral.a: $(ENGINE_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/$(SONAME): $(ENGINE_OBJ)
	$(CC) $(CFLAGS) -shared -Wl,-soname,$(SONAME) -o $@ $^ $(LIBS)
	@ln -sf $(SONAME) $(BUILD)/libvoxtral.so

$(BUILD)/cli/%.o: cli/%.c cli/cli.h voxtral.h voxtral_text.h $(STAMP) | $(BUILD)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(CLI_CFLAGS) -DVOXTRAL_VERSION='"$(VERSION)"' -DVOXTRAL_SHARE='"$(PREFIX)/share/voxtral"' -c -o $@ $<

$(BUILD)/server/%.o: server/%.c server/server.h server/conn.h voxtral.h voxtral_text.h $(STAMP) | $(BUILD)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(CLI_CFLAGS) -c -o $@ $<

$(BUILD)/%.o: %.c voxtral.h voxtral_text.h voxtral_internal.h voxtral_engine.h voxtral_error.h voxtral_quant.h $(wildcard voxtral_cuda.h voxtral_cuda_impl.h) $(STAMP) | $(BUILD)
	$(CC) $(CFLAGS) -c -o $@ $<

$(BUILD)/cuda/%.o: cuda/%.cu $(wildcard cuda/*.cuh) voxtral_cuda.h $(STAMP) | $(BUILD)
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCCFLAGS) -c -o $@ $<

$(BUILD)/tests/%: tests/%.c tests/testutil.h tests/cudatest.h voxtral_quant.h $(BUILD)/libvoxtral.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< $(BUILD)/libvoxtral.a $(LIBS)

$(BUILD):
	@mkdir -p $(BUILD)/cuda $(BUILD)/tests

cpu:
	$(MAKE) CUDA=0
cuda:
	@test -x $(NVCC) || { echo "nvcc not found at $(NVCC): run 'make cuda-check'"; exit 1; }
	@for a in $(CUDA_ARCH); do $(NVCC) --list-gpu-arch | grep -qx "compute_$$a" || { \
	  echo "CUDA_ARCH: CUDA $$($(NVCC) --version | grep -o 'release [0-9.]*' | cut -d' ' -f2) cannot target sm_$$a (it supports: $$($(NVCC) --list-gpu-arch | sed 's/compute_//' | tr '\n' ' ')); use CUDA 12.x for older GPUs"; exit 1; }; done
	@echo "building the CUDA backend: SASS for sm_$(subst $() ,$(comma)sm_,$(strip $(CUDA_ARCH))), PTX for compute_$(lastword $(CUDA_ARCH)); host ISA $(MARCH)"
	$(MAKE) CUDA=1 CUDA_ARCH="$(CUDA_ARCH)" $(if $(NVCC_CCBIN),NVCC_CCBIN="$(NVCC_CCBIN)")

# the serving load test (scripts/bench_streams.sh): build/bench_streams
$(BUILD)/bench/streams: bench/streams.c $(BUILD)/libvoxtral.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< $(BUILD)/libvoxtral.a $(LIBS)
bench-streams: $(BUILD)/bench/streams
	@cp $< build/bench_streams
# where an encoder batch's GPU time goes, op by op (CUDA builds): build/bench_cuda_encoder
$(BUILD)/bench/cuda_encoder: bench/cuda_encoder.c tests/cudatest.h tests/testutil.h $(BUILD)/libvoxtral.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< $(BUILD)/libvoxtral.a $(LIBS)
bench-cuda-encoder: $(BUILD)/bench/cuda_encoder
	@cp $< build/bench_cuda_encoder

tests: $(TEST_BIN)
# a sanitizer build tests its own binary and leaves ./voxtral alone
test: $(if $(SANITIZE),$(BUILD)/voxtral,voxtral) tests
	@BUILD=$(BUILD) VOXTRAL=$(if $(SANITIZE),$(BUILD)/voxtral,./voxtral) tests/run_tests.sh

bench: voxtral
	scripts/bench.sh

asan debug:
	$(MAKE) SANITIZE=address,undefined build/asan/voxtral tests
# allocator_may_return_null: tests provoke failed huge allocations on purpose
asan-test:
	ASAN_OPTIONS=allocator_may_return_null=1:detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
	  $(MAKE) SANITIZE=address,undefined test
# libFuzzer targets (tests/fuzz/, clang): make fuzz FUZZ_SECONDS=60 runs each that long
fuzz:
	scripts/fuzz.sh $(or $(FUZZ_SECONDS),20)

cuda-check:
	@test -x $(NVCC) || { echo "nvcc not found at $(NVCC): install the CUDA toolkit or pass CUDA_HOME=/path/to/cuda"; exit 1; }
	@test -f $(CUDA_HOME)/include/cuda_runtime.h || { echo "cuda_runtime.h missing under $(CUDA_HOME)/include: pass CUDA_HOME"; exit 1; }
	@ls $(CUDA_HOME)/lib64/libcublasLt.so* >/dev/null 2>&1 || { echo "cuBLASLt missing under $(CUDA_HOME)/lib64: install the CUDA math libraries (libcublas)"; exit 1; }
	@echo "CUDA toolkit OK: $(CUDA_HOME), CUDA $$($(NVCC) --version | grep -o 'release [0-9.]*' | cut -d' ' -f2), target SM $(CUDA_ARCH)"

clean:
	rm -rf build voxtral

# make install PREFIX=/usr/local: the CLI, the static and shared libraries, the header
# and a pkg-config file (`cc app.c $(pkg-config --cflags --libs voxtral)` links the
# shared one; add --static for the archive).
install: voxtral $(BUILD)/libvoxtral.a $(BUILD)/$(SONAME)
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib/pkgconfig $(DESTDIR)$(PREFIX)/include
	install -m 755 $(if $(SANITIZE),$(BUILD)/voxtral,voxtral) $(DESTDIR)$(PREFIX)/bin/voxtral
	install -m 644 $(BUILD)/libvoxtral.a $(DESTDIR)$(PREFIX)/lib/libvoxtral.a
	install -m 755 $(BUILD)/$(SONAME) $(DESTDIR)$(PREFIX)/lib/$(SONAME)
	ln -sf $(SONAME) $(DESTDIR)$(PREFIX)/lib/libvoxtral.so
	install -m 644 voxtral.h voxtral_text.h $(DESTDIR)$(PREFIX)/include/
	@# the default model (voxtral without -d), when samples/tiny-en has been made
	if [ -f samples/tiny-en/params.json ]; then install -d $(DESTDIR)$(PREFIX)/share/voxtral/tiny-en && \
	  install -m 644 samples/tiny-en/consolidated.safetensors samples/tiny-en/params.json samples/tiny-en/tekken.json \
	  $(DESTDIR)$(PREFIX)/share/voxtral/tiny-en/; fi
	printf '%s\n' 'prefix=$(PREFIX)' 'libdir=$${prefix}/lib' 'includedir=$${prefix}/include' '' \
	  'Name: voxtral' 'Description: Voxtral Realtime speech-to-text engine (C, CUDA)' 'Version: $(VERSION)' \
	  'Cflags: -I$${includedir}' 'Libs: -L$${libdir} -Wl,-rpath,$${libdir} -lvoxtral$(if $(SANITIZE), -fsanitize=$(SANITIZE))' 'Libs.private: $(LIBS)' \
	  > $(DESTDIR)$(PREFIX)/lib/pkgconfig/voxtral.pc
	@echo "installed into $(DESTDIR)$(PREFIX)"

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/bin/voxtral $(DESTDIR)$(PREFIX)/lib/libvoxtral.a \
	  $(DESTDIR)$(PREFIX)/lib/$(SONAME) $(DESTDIR)$(PREFIX)/lib/libvoxtral.so \
	  $(DESTDIR)$(PREFIX)/include/voxtral.h $(DESTDIR)$(PREFIX)/include/voxtral_text.h \
	  $(DESTDIR)$(PREFIX)/lib/pkgconfig/voxtral.pc
	rm -rf $(DESTDIR)$(PREFIX)/share/voxtral

help:
	@echo "make          build ./voxtral (CUDA backend too when nvcc is found)"
	@echo "make cpu      CPU-only build (OpenBLAS + own BF16 kernels)"
	@echo "make cuda     CPU + CUDA build; CUDA_ARCH=\"80 90\" CUDA_HOME=... override"
	@echo "make cuda-check  explain what the CUDA build is missing"
	@echo "make test     build and run the test suite (ends with 'N passed, N failed')"
	@echo "make bench    benchmark on a random full-size model (scripts/bench.sh)"
	@echo "make asan     ASan/UBSan build in build/asan (CPU); make asan-test runs the suite on it"
	@echo "make fuzz     build and run each libFuzzer target (tests/fuzz/) FUZZ_SECONDS each (20)"
	@echo "make install PREFIX=/usr/local   binary, libvoxtral.a/.so, voxtral.h, voxtral.pc"
	@echo "CPU_ISA=native|avx512|avx2|generic (default native): host kernel instruction set"
