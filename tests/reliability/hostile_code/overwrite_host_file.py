# hostile: overwrite host file (exit 0 would mean the attack worked)
open(TARGET_DIR + '/canary.txt', 'w').write('pwned')
