# hostile: subprocess shell (exit 0 would mean the attack worked)
import subprocess
subprocess.run(['sh', '-c', 'touch ' + TARGET_DIR + '/by_shell.txt'], check=True)
