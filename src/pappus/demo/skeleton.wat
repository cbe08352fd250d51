;; pappus demo function skeleton: reads item "text" of input set "in"
;; (/in/text), applies $transform to its bytes in place, writes /out/text.
;; Each failure says why on stderr and exits non-zero: no item "text" (1), an
;; item over 1 MiB (3), /out/text cannot be created (2).
;; Memory: 0..15 scratch (iovec, counts, fd), 64.. paths, 128.. messages,
;; 65536.. data (1 MiB, plus one byte that tells a larger item).
(module
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read"
    (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 18)
  (data (i32.const 64) "in/text")
  (data (i32.const 80) "out/text")
  (data (i32.const 128) "demo function: input set \"in\" has no item named \"text\" (it reads /in/text)\n")  ;; 75 bytes
  (data (i32.const 256) "demo function: item \"text\" is larger than its 1 MiB limit\n")  ;; 58 bytes
  (data (i32.const 384) "demo function: cannot create /out/text\n")  ;; 39 bytes
  ;; Write message [ptr, ptr+len) to stderr, then exit with $code.
  (func $fail (param $ptr i32) (param $len i32) (param $code i32)
    (i32.store (i32.const 0) (local.get $ptr))
    (i32.store (i32.const 4) (local.get $len))
    (drop (call $fd_write (i32.const 2) (i32.const 0) (i32.const 1) (i32.const 8)))
    (call $proc_exit (local.get $code)))
  ;;TRANSFORM;;
  (func (export "_start")
    (local $len i32) (local $n i32)
    ;; open /in/text (read), exit 1 if absent
    (if (call $path_open (i32.const 3) (i32.const 0) (i32.const 64) (i32.const 7)
                         (i32.const 0) (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 16))
      (then (call $fail (i32.const 128) (i32.const 75) (i32.const 1))))
    (block $done
      (loop $more
        (i32.store (i32.const 0) (i32.add (i32.const 65536) (local.get $len)))
        (i32.store (i32.const 4) (i32.sub (i32.const 1048577) (local.get $len)))
        (br_if $done (call $fd_read (i32.load (i32.const 16)) (i32.const 0) (i32.const 1)
                                    (i32.const 8)))
        (local.set $n (i32.load (i32.const 8)))
        (br_if $done (i32.eqz (local.get $n)))
        (local.set $len (i32.add (local.get $len) (local.get $n)))
        (br_if $done (i32.gt_u (local.get $len) (i32.const 1048576)))
        (br $more)))
    (if (i32.gt_u (local.get $len) (i32.const 1048576))
      (then (call $fail (i32.const 256) (i32.const 58) (i32.const 3))))
    (call $transform (local.get $len))
    ;; create /out/text (O_CREAT|O_TRUNC, right fd_write), exit 2 on failure
    (if (call $path_open (i32.const 3) (i32.const 0) (i32.const 80) (i32.const 8)
                         (i32.const 9) (i64.const 64) (i64.const 0) (i32.const 0) (i32.const 16))
      (then (call $fail (i32.const 384) (i32.const 39) (i32.const 2))))
    (i32.store (i32.const 0) (i32.const 65536))
    (i32.store (i32.const 4) (local.get $len))
    (drop (call $fd_write (i32.load (i32.const 16)) (i32.const 0) (i32.const 1)
                          (i32.const 8)))))
