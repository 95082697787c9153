{
  # Development shell for voxtral: `nix develop`, then `make` / `make cuda` / `make test`.
  # CUDA comes from nixpkgs' cudaPackages (unfree: allowed below); nvcc gets the
  # GCC it supports through cudaPackages.backendStdenv, so host-compiler version
  # errors ("unsupported GNU version") do not happen.
  description = "voxtral: Voxtral Realtime speech-to-text in C and CUDA";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs = { self, nixpkgs }:
    let
      system = "x86_64-linux";
      pkgs = import nixpkgs {
        inherit system;
        config = { allowUnfree = true; cudaSupport = true; };
      };
      cuda = pkgs.cudaPackages;
      cudaToolkit = pkgs.symlinkJoin {
        name = "cuda-toolkit-for-voxtral";
        paths = [
          cuda.cuda_nvcc
          cuda.cuda_cudart
          cuda.cuda_cccl
          cuda.libcublas
        ] ++ map pkgs.lib.getDev [ cuda.cuda_cudart cuda.libcublas ];
      };
      libs = with pkgs; [
        openblas
        fftwFloat
        libsndfile
        soxr
        cjson
        portaudio
      ];
    in
    {
      devShells.${system}.default = pkgs.mkShell.override { stdenv = cuda.backendStdenv; } {
        packages = libs ++ [
          cudaToolkit
          pkgs.pkg-config
          pkgs.gnumake
          (pkgs.python3.withPackages (p: [ p.numpy ]))
          pkgs.espeak-ng
          pkgs.sox
        ];
        # The Makefile finds nvcc and the CUDA headers/libraries through CUDA_HOME.
        CUDA_HOME = "${cudaToolkit}";
        shellHook = ''
          # libcuda.so comes from the host's NVIDIA driver, not from nixpkgs
          export LD_LIBRARY_PATH=/run/opengl-driver/lib''${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
          echo "voxtral dev shell: CUDA $(nvcc --version | grep -o 'release [0-9.]*'), make cuda CUDA_ARCH=... to target GPUs"
        '';
      };
    };
}
