# hostile: write outside (exit 0 would mean the attack worked)
open(TARGET_DIR + '/written_by_sandbox.txt', 'w').write('pwned')
