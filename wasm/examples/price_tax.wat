;; JSON handler (the apprun function ABI):
;;   exports memory, alloc(len) -> ptr, handle(ptr, len) -> i64 (out_ptr << 32 | out_len)
;; Input:  {"items": [{"name": "A", "price_cents": 1000}, ...], "tax_rate_bp": 2000}
;; Output: {"count":N,"subtotal_cents":S,"tax_cents":T,"total_cents":S+T}
;; Tax is rounded half up to a cent; tax_rate_bp is in basis points (2000 = 20 %).
(module
  (memory (export "memory") 1)
  ;; constant strings live below 256; the bump heap starts at 1024
  (data (i32.const 0) "\"price_cents\"")        ;; 13 bytes at 0
  (data (i32.const 16) "\"tax_rate_bp\"")       ;; 13 bytes at 16
  (data (i32.const 32) "{\"count\":")           ;; 9 bytes at 32
  (data (i32.const 48) ",\"subtotal_cents\":")  ;; 18 bytes at 48
  (data (i32.const 80) ",\"tax_cents\":")       ;; 13 bytes at 80
  (data (i32.const 96) ",\"total_cents\":")     ;; 15 bytes at 96
  (global $heap (mut i32) (i32.const 1024))
  (global $cursor (mut i32) (i32.const 0))

  (func $alloc (export "alloc") (param $len i32) (result i32)
    (local $ptr i32) (local $needed i32)
    (local.set $ptr (global.get $heap))
    (global.set $heap (i32.and (i32.add (i32.add (local.get $ptr) (local.get $len)) (i32.const 7))
                               (i32.const -8)))
    (local.set $needed (i32.sub (i32.shr_u (i32.add (global.get $heap) (i32.const 65535)) (i32.const 16))
                                (memory.size)))
    (if (i32.gt_s (local.get $needed) (i32.const 0))
      (then (if (i32.eq (memory.grow (local.get $needed)) (i32.const -1)) (then unreachable))))
    (local.get $ptr))

  ;; 1 when the key (at $key, $klen bytes) is at $p
  (func $match (param $p i32) (param $key i32) (param $klen i32) (result i32)
    (local $i i32)
    (block $no
      (loop $next
        (br_if 1 (i32.ge_u (local.get $i) (local.get $klen)))
        (br_if $no (i32.ne (i32.load8_u (i32.add (local.get $p) (local.get $i)))
                           (i32.load8_u (i32.add (local.get $key) (local.get $i)))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (if (i32.ge_u (local.get $i) (local.get $klen)) (then (return (i32.const 1))))
    (i32.const 0))

  ;; first position >= $p where the key starts, or -1
  (func $find (param $p i32) (param $end i32) (param $key i32) (param $klen i32) (result i32)
    (block $done
      (loop $scan
        (br_if $done (i32.gt_u (i32.add (local.get $p) (local.get $klen)) (local.get $end)))
        (if (call $match (local.get $p) (local.get $key) (local.get $klen))
          (then (return (local.get $p))))
        (local.set $p (i32.add (local.get $p) (i32.const 1)))
        (br $scan)))
    (i32.const -1))

  ;; the non-negative integer after "key" : (spaces allowed); leaves $cursor after it
  (func $int_after (param $p i32) (param $end i32) (result i64)
    (local $v i64) (local $c i32)
    (block $digits_done
      (loop $skip
        (br_if $digits_done (i32.ge_u (local.get $p) (local.get $end)))
        (local.set $c (i32.load8_u (local.get $p)))
        (if (i32.or (i32.eq (local.get $c) (i32.const 58))
                    (i32.or (i32.eq (local.get $c) (i32.const 32)) (i32.eq (local.get $c) (i32.const 9))))
          (then (local.set $p (i32.add (local.get $p) (i32.const 1))) (br $skip))))
      (loop $digit
        (br_if $digits_done (i32.ge_u (local.get $p) (local.get $end)))
        (local.set $c (i32.sub (i32.load8_u (local.get $p)) (i32.const 48)))
        (br_if $digits_done (i32.gt_u (local.get $c) (i32.const 9)))
        (local.set $v (i64.add (i64.mul (local.get $v) (i64.const 10)) (i64.extend_i32_u (local.get $c))))
        (local.set $p (i32.add (local.get $p) (i32.const 1)))
        (br $digit)))
    (global.set $cursor (local.get $p))
    (local.get $v))

  (func $copy (param $dst i32) (param $src i32) (param $len i32) (result i32)
    (memory.copy (local.get $dst) (local.get $src) (local.get $len))
    (i32.add (local.get $dst) (local.get $len)))

  ;; decimal digits of $v at $dst; returns the end
  (func $itoa (param $dst i32) (param $v i64) (result i32)
    (local $tmp i32) (local $n i32) (local $i i32)
    (local.set $tmp (i32.const 256))  ;; scratch for reversed digits
    (loop $div
      (i32.store8 (i32.add (local.get $tmp) (local.get $n))
                  (i32.add (i32.const 48) (i32.wrap_i64 (i64.rem_u (local.get $v) (i64.const 10)))))
      (local.set $n (i32.add (local.get $n) (i32.const 1)))
      (local.set $v (i64.div_u (local.get $v) (i64.const 10)))
      (br_if $div (i64.ne (local.get $v) (i64.const 0))))
    (loop $rev
      (local.set $n (i32.sub (local.get $n) (i32.const 1)))
      (i32.store8 (i32.add (local.get $dst) (local.get $i)) (i32.load8_u (i32.add (local.get $tmp) (local.get $n))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $rev (i32.gt_s (local.get $n) (i32.const 0))))
    (i32.add (local.get $dst) (local.get $i)))

  (func (export "handle") (param $ptr i32) (param $len i32) (result i64)
    (local $end i32) (local $p i32) (local $count i64) (local $sum i64) (local $bp i64) (local $tax i64)
    (local $out i32) (local $w i32)
    (local.set $end (i32.add (local.get $ptr) (local.get $len)))
    (local.set $p (local.get $ptr))
    (block $no_more
      (loop $each
        (local.set $p (call $find (local.get $p) (local.get $end) (i32.const 0) (i32.const 13)))
        (br_if $no_more (i32.eq (local.get $p) (i32.const -1)))
        (local.set $sum (i64.add (local.get $sum)
                                 (call $int_after (i32.add (local.get $p) (i32.const 13)) (local.get $end))))
        (local.set $count (i64.add (local.get $count) (i64.const 1)))
        (local.set $p (global.get $cursor))
        (br $each)))
    (local.set $p (call $find (local.get $ptr) (local.get $end) (i32.const 16) (i32.const 13)))
    (if (i32.ne (local.get $p) (i32.const -1))
      (then (local.set $bp (call $int_after (i32.add (local.get $p) (i32.const 13)) (local.get $end)))))
    (local.set $tax (i64.div_u (i64.add (i64.mul (local.get $sum) (local.get $bp)) (i64.const 5000))
                               (i64.const 10000)))
    (local.set $out (call $alloc (i32.const 128)))
    (local.set $w (call $copy (local.get $out) (i32.const 32) (i32.const 9)))
    (local.set $w (call $itoa (local.get $w) (local.get $count)))
    (local.set $w (call $copy (local.get $w) (i32.const 48) (i32.const 18)))
    (local.set $w (call $itoa (local.get $w) (local.get $sum)))
    (local.set $w (call $copy (local.get $w) (i32.const 80) (i32.const 13)))
    (local.set $w (call $itoa (local.get $w) (local.get $tax)))
    (local.set $w (call $copy (local.get $w) (i32.const 96) (i32.const 15)))
    (local.set $w (call $itoa (local.get $w) (i64.add (local.get $sum) (local.get $tax))))
    (i32.store8 (local.get $w) (i32.const 125))  ;; }
    (local.set $w (i32.add (local.get $w) (i32.const 1)))
    (i64.or (i64.shl (i64.extend_i32_u (local.get $out)) (i64.const 32))
            (i64.extend_i32_u (i32.sub (local.get $w) (local.get $out))))))
