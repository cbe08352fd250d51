;; pappus demo function "wordcount": for every item of input set "text",
;; write an item of output set "counts" with the same name and key whose
;; content is the item's number of words (decimal, then "\n"). Words are runs
;; of bytes other than space, \t, \n, \v, \f, \r.
;;
;; It finds the items (and their keys) in /.pappus/keys/text, one line
;; "<key> <name>\n" per item, reads /text/<name> and writes
;; /counts/<name>@<key> (the "@<key>" suffix sets the output item's key),
;; creating sub-directories for names containing "/".
;;
;; Each failure says why on stderr and exits non-zero (1 to 5, below).
;;
;; Memory: 0..63 scratch (iovec at 0, counts at 8, fd at 16, digits at 32),
;; 64.. constant strings, 256..4351 path buffer, 4480.. messages, 8192..73728 the
;; keys listing (64 KiB, plus one byte that tells a longer one), 131072..196607
;; the read buffer.
(module
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_create_directory"
    (func $mkdir (param i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read"
    (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_close" (func $fd_close (param i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 4)
  (data (i32.const 64) ".pappus/keys/text")  ;; 17 bytes
  (data (i32.const 96) "text/")              ;; 5 bytes
  (data (i32.const 112) "counts/")           ;; 7 bytes
  (data (i32.const 4480) "wordcount: input set \"text\" is absent (no /.pappus/keys/text)\n")  ;; exit 1, 62 bytes
  (data (i32.const 4608) "wordcount: cannot create an item of output set \"counts\"\n")  ;; exit 2, 56 bytes
  (data (i32.const 4736) "wordcount: cannot write an output item\n")  ;; exit 3, 39 bytes
  (data (i32.const 4864) "wordcount: more items than its 64 KiB listing limit\n")  ;; exit 4, 52 bytes
  (data (i32.const 4992) "wordcount: an item name longer than its 4000-byte limit\n")  ;; exit 5, 56 bytes

  (global $PATH i32 (i32.const 256))
  (global $KEYS i32 (i32.const 8192))
  (global $KEYS_CAP i32 (i32.const 65537))
  (global $BUF i32 (i32.const 131072))
  (global $BUF_CAP i32 (i32.const 65536))

  ;; Open path [ptr, ptr+len) relative to the root (fd 3); returns the fd, or -1.
  (func $open (param $ptr i32) (param $len i32) (param $oflags i32) (param $rights i64)
              (result i32)
    (if (call $path_open (i32.const 3) (i32.const 0) (local.get $ptr) (local.get $len)
                         (local.get $oflags) (local.get $rights) (i64.const 0) (i32.const 0)
                         (i32.const 16))
      (then (return (i32.const -1))))
    (i32.load (i32.const 16)))

  ;; One fd_read of up to $cap bytes into $dst; returns the count (0 at the end or on error).
  (func $read (param $fd i32) (param $dst i32) (param $cap i32) (result i32)
    (i32.store (i32.const 0) (local.get $dst))
    (i32.store (i32.const 4) (local.get $cap))
    (if (call $fd_read (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 8))
      (then (return (i32.const 0))))
    (i32.load (i32.const 8)))

  ;; Write message [ptr, ptr+len) to stderr, then exit with $code.
  (func $fail (param $ptr i32) (param $len i32) (param $code i32)
    (i32.store (i32.const 0) (local.get $ptr))
    (i32.store (i32.const 4) (local.get $len))
    (drop (call $fd_write (i32.const 2) (i32.const 0) (i32.const 1) (i32.const 8)))
    (call $proc_exit (local.get $code)))

  ;; Write [ptr, ptr+len) to $fd (exit 3 on failure).
  (func $write (param $fd i32) (param $ptr i32) (param $len i32)
    (i32.store (i32.const 0) (local.get $ptr))
    (i32.store (i32.const 4) (local.get $len))
    (if (call $fd_write (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 8))
      (then (call $fail (i32.const 4736) (i32.const 39) (i32.const 3)))))

  ;; Copy [src, src+len) to dst; returns dst+len.
  (func $copy (param $dst i32) (param $src i32) (param $len i32) (result i32)
    (memory.copy (local.get $dst) (local.get $src) (local.get $len))
    (i32.add (local.get $dst) (local.get $len)))

  (func $is_space (param $c i32) (result i32)
    (i32.or (i32.eq (local.get $c) (i32.const 32))
            (i32.and (i32.ge_u (local.get $c) (i32.const 9))
                     (i32.le_u (local.get $c) (i32.const 13)))))

  ;; Words in the file open at $fd.
  (func $count_words (param $fd i32) (result i32)
    (local $n i32) (local $i i32) (local $words i32) (local $in_word i32) (local $space i32)
    (block $eof
      (loop $chunk
        (local.set $n (call $read (local.get $fd) (global.get $BUF) (global.get $BUF_CAP)))
        (br_if $eof (i32.eqz (local.get $n)))
        (local.set $i (i32.const 0))
        (block $done
          (loop $byte
            (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
            (local.set $space (call $is_space
              (i32.load8_u (i32.add (global.get $BUF) (local.get $i)))))
            (if (i32.and (i32.eqz (local.get $space)) (i32.eqz (local.get $in_word)))
              (then (local.set $words (i32.add (local.get $words) (i32.const 1)))))
            (local.set $in_word (i32.eqz (local.get $space)))
            (local.set $i (i32.add (local.get $i) (i32.const 1)))
            (br $byte)))
        (br $chunk)))
    (local.get $words))

  ;; Write $value in decimal followed by "\n" to $fd.
  (func $write_decimal (param $fd i32) (param $value i32)
    (local $p i32)
    (local.set $p (i32.const 63))
    (i32.store8 (local.get $p) (i32.const 10))
    (loop $digit
      (local.set $p (i32.sub (local.get $p) (i32.const 1)))
      (i32.store8 (local.get $p)
                  (i32.add (i32.const 48) (i32.rem_u (local.get $value) (i32.const 10))))
      (local.set $value (i32.div_u (local.get $value) (i32.const 10)))
      (br_if $digit (local.get $value)))
    (call $write (local.get $fd) (local.get $p) (i32.sub (i32.const 64) (local.get $p))))

  ;; Create every parent directory of the path [PATH, end) (errors ignored: most exist).
  (func $make_parents (param $end i32)
    (local $p i32)
    (local.set $p (i32.add (global.get $PATH) (i32.const 7)))  ;; after "counts/"
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $p) (local.get $end)))
        (if (i32.eq (i32.load8_u (local.get $p)) (i32.const 47))  ;; '/'
          (then (drop (call $mkdir (i32.const 3) (global.get $PATH)
                                   (i32.sub (local.get $p) (global.get $PATH))))))
        (local.set $p (i32.add (local.get $p) (i32.const 1)))
        (br $next))))

  ;; Count item [name, name+name_len) with key text [key, key+key_len).
  (func $count_item (param $name i32) (param $name_len i32) (param $key i32)
                    (param $key_len i32)
    (local $end i32) (local $fd i32) (local $words i32)
    (if (i32.gt_u (i32.add (local.get $name_len) (local.get $key_len)) (i32.const 4000))
      (then (call $fail (i32.const 4992) (i32.const 56) (i32.const 5))))  ;; longer than the path buffer
    ;; read /text/<name>
    (local.set $end (call $copy (global.get $PATH) (i32.const 96) (i32.const 5)))
    (local.set $end (call $copy (local.get $end) (local.get $name) (local.get $name_len)))
    (local.set $fd (call $open (global.get $PATH) (i32.sub (local.get $end) (global.get $PATH))
                               (i32.const 0) (i64.const 2)))
    (if (i32.lt_s (local.get $fd) (i32.const 0)) (then (return)))  ;; not shown as a file
    (local.set $words (call $count_words (local.get $fd)))
    (drop (call $fd_close (local.get $fd)))
    ;; write /counts/<name>@<key>
    (local.set $end (call $copy (global.get $PATH) (i32.const 112) (i32.const 7)))
    (local.set $end (call $copy (local.get $end) (local.get $name) (local.get $name_len)))
    (call $make_parents (local.get $end))
    (i32.store8 (local.get $end) (i32.const 64))  ;; '@'
    (local.set $end (call $copy (i32.add (local.get $end) (i32.const 1)) (local.get $key)
                                (local.get $key_len)))
    ;; O_CREAT|O_TRUNC, right fd_write
    (local.set $fd (call $open (global.get $PATH) (i32.sub (local.get $end) (global.get $PATH))
                               (i32.const 9) (i64.const 64)))
    (if (i32.lt_s (local.get $fd) (i32.const 0)) (then (call $fail (i32.const 4608) (i32.const 56) (i32.const 2))))
    (call $write_decimal (local.get $fd) (local.get $words))
    (drop (call $fd_close (local.get $fd))))

  (func (export "_start")
    (local $fd i32) (local $len i32) (local $n i32) (local $p i32) (local $end i32)
    (local $key i32) (local $key_len i32) (local $name i32)
    (local.set $fd (call $open (i32.const 64) (i32.const 17) (i32.const 0) (i64.const 2)))
    (if (i32.lt_s (local.get $fd) (i32.const 0)) (then (call $fail (i32.const 4480) (i32.const 62) (i32.const 1))))
    ;; the whole listing (at most 64 KiB)
    (block $full
      (loop $more
        (local.set $n (call $read (local.get $fd) (i32.add (global.get $KEYS) (local.get $len))
                                  (i32.sub (global.get $KEYS_CAP) (local.get $len))))
        (br_if $full (i32.eqz (local.get $n)))
        (local.set $len (i32.add (local.get $len) (local.get $n)))
        (br $more)))
    (drop (call $fd_close (local.get $fd)))
    (if (i32.gt_u (local.get $len) (i32.const 65536)) (then (call $fail (i32.const 4864) (i32.const 52) (i32.const 4))))
    ;; lines "<key> <name>\n"
    (local.set $p (global.get $KEYS))
    (local.set $end (i32.add (global.get $KEYS) (local.get $len)))
    (block $lines_done
      (loop $line
        (br_if $lines_done (i32.ge_u (local.get $p) (local.get $end)))
        (local.set $key (local.get $p))
        (block $key_done
          (loop $key_char
            (br_if $key_done (i32.ge_u (local.get $p) (local.get $end)))
            (br_if $key_done (i32.eq (i32.load8_u (local.get $p)) (i32.const 32)))
            (local.set $p (i32.add (local.get $p) (i32.const 1)))
            (br $key_char)))
        (local.set $key_len (i32.sub (local.get $p) (local.get $key)))
        (local.set $p (i32.add (local.get $p) (i32.const 1)))  ;; the space
        (local.set $name (local.get $p))
        (block $name_done
          (loop $name_char
            (br_if $name_done (i32.ge_u (local.get $p) (local.get $end)))
            (br_if $name_done (i32.eq (i32.load8_u (local.get $p)) (i32.const 10)))
            (local.set $p (i32.add (local.get $p) (i32.const 1)))
            (br $name_char)))
        (if (i32.lt_u (local.get $name) (local.get $p))
          (then (call $count_item (local.get $name) (i32.sub (local.get $p) (local.get $name))
                                  (local.get $key) (local.get $key_len))))
        (local.set $p (i32.add (local.get $p) (i32.const 1)))  ;; the newline
        (br $line)))))
