# A helper thread's entry point (see thread_state.c). Each wasm instance has its own
# __stack_pointer global, starting where the owner's stack starts: a helper must move it to
# its own stack before any code uses the stack, which only hand-written code can promise.
	.text
	.globaltype	__stack_pointer, i32
	.functype	webkiln_thread_run (i32) -> ()
	.globl	webkiln_thread_entry
	.export_name	webkiln_thread_entry, webkiln_thread_entry
	.type	webkiln_thread_entry,@function
webkiln_thread_entry:
	.functype	webkiln_thread_entry (i32) -> ()
	local.get	0
	i32.load	0      # webkiln_thread.stack_top
	global.set	__stack_pointer
	local.get	0
	call	webkiln_thread_run
	end_function
